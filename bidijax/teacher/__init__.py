"""Teachers: language models (torch + transformers) that give the student action hints.

``HFTeacher`` scores the BabyAI-Text action strings of situations with a Hugging Face model
(torch); ``GPT2Teachers`` runs every seed's GPT-2 teacher in one JAX program. Everything loads
on first access: importing this package imports neither JAX nor torch. ``default_model_path()``
is the small causal LM shipped with the package (``HFTeacher("default")`` loads it).
``oracle``, ``noisy_oracle(eps)`` and ``uniform`` are scripted teachers (``scripted``) for ablations.
The JAX layers never import this package.
"""

from __future__ import annotations

import os

from bidijax.lazy import lazy_names

_LAZY = {
    "HFTeacher": "hf", "GPT2Teachers": "batched", "ScriptedTeacher": "scripted", "noisy_oracle": "scripted",
    "oracle": "scripted", "uniform": "scripted",
}  # fmt: skip


def default_model_path() -> str:
    """Directory of the shipped default teacher (Hugging Face format)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_model")


__all__ = ["GPT2Teachers", "HFTeacher", "ScriptedTeacher", "default_model_path", "noisy_oracle", "oracle", "uniform"]
__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
