"""Teachers: language models (torch + transformers) that give the student action hints.

``HFTeacher`` scores the BabyAI-Text action strings of situations with a Hugging Face model
(loaded on first access: importing this package does not import torch). ``default_model_path()``
is the small causal LM shipped with the package (``HFTeacher("default")`` loads it).
``oracle``, ``noisy_oracle(eps)`` and ``uniform`` are scripted teachers (``scripted``) for ablations.
The JAX layers never import this package.
"""

from __future__ import annotations

import os

from .scripted import ScriptedTeacher, noisy_oracle, oracle, uniform


def default_model_path() -> str:
    """Directory of the shipped default teacher (Hugging Face format)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_model")


def __getattr__(name: str):
    if name == "HFTeacher":
        from .hf import HFTeacher

        return HFTeacher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["HFTeacher", "ScriptedTeacher", "default_model_path", "noisy_oracle", "oracle", "uniform"]
