"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import hashlib
import os
import time

import bidijax


def source_fingerprint() -> str:
    """sha1 (12 hex) of bidijax's Python sources and the newest file's mtime: the code measured."""
    root = os.path.dirname(os.path.abspath(bidijax.__file__))
    h, newest = hashlib.sha1(), 0.0
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                with open(path, "rb") as fh:
                    h.update(path[len(root) :].encode() + b"\0" + fh.read())
                newest = max(newest, os.path.getmtime(path))
    return f"{h.hexdigest()[:12]} (newest file {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(newest))})"


def flan_t5_small_shaped(directory: str) -> str:
    """Save a randomly initialised T5 of Flan-T5-small's shape (and a tokenizer) to ``directory``."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from bidijax.teacher.tokenizer import build_tokenizer, save_tokenizer

    tok = build_tokenizer()
    config = T5Config(
        vocab_size=32128, d_model=512, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6, d_kv=64,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    save_tokenizer(tok, directory)
    return directory
