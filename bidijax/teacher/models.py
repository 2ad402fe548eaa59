"""Where a teacher model comes from, and which backend computes it; light (no JAX, no torch).

``resolve_model`` turns ``default``, a local Hugging Face model directory or a hub id into what
transformers loads; ``backend_of`` picks the JAX or torch backend for a teacher config. Kept
apart from ``hf`` so that deciding about a teacher does not start JAX's backend
(``bidijax.gpu_memory`` must decide before it starts).
"""

from __future__ import annotations

import json
import os
import re

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
)
# Hugging Face repo ids: "name" or "owner/name" of word characters, "-" and ".", no "--" or ".."
_HUB_ID = re.compile(r"^(?:\w(?:[\w.-]*\w)?/)?\w(?:[\w.-]*\w)?$")


def _is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and "--" not in name and ".." not in name and len(name) <= 96


def resolve_model(model: str) -> str:
    """Local directory (or hub id) to load ``model`` from; one-line ``ValueError`` when it can't be."""
    if model == "default":
        from . import default_model_path

        path = default_model_path()
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"the default teacher model is missing from {path}; reinstall bidijax")
        return path
    model = os.path.expanduser(str(model))
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise ValueError(f"model directory {model!r} has no config.json (not a Hugging Face model directory)")
        if not any(os.path.exists(os.path.join(model, f)) for f in TOKENIZER_FILES):
            raise ValueError(
                f"model directory {model!r} has no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})"
            )
        return model
    if os.path.exists(model) or not _is_hub_id(model):
        raise ValueError(
            f"model {model!r} is neither an existing model directory nor a Hugging Face hub id "
            "(like 'google/flan-t5-small'), nor 'default'"
        )
    return model


def backend_of(tc) -> str:
    """``torch`` or ``jax`` for a learning LM teacher's ``TeacherConfig`` (``auto``: JAX for GPT-2
    models without LoRA)."""
    if tc.backend != "auto":
        return tc.backend
    if tc.finetune.lora_rank:
        return "torch"
    path = resolve_model(tc.name)
    try:
        with open(os.path.join(path, "config.json")) as f:
            return "jax" if json.load(f).get("model_type") == "gpt2" else "torch"
    except OSError:  # a hub id: transformers resolves it later; torch handles every model
        return "torch"
