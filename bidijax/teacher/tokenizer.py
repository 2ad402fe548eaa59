"""Word-level tokenizer for BabyAI-Text prompts and action strings, built offline.

Every word a prompt of ``bidijax.envs.text.prompt`` or an action string can contain is one
token; punctuation (":" and ",") and the newline are tokens of their own; spaces separate
words and are dropped. Special tokens: ``[PAD]`` (id 0), ``[UNK]``, ``[BOS]``, ``[EOS]``. No
special token is added when encoding.
"""

from __future__ import annotations

import json
import os
import re

from bidijax.envs import constants as C

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
#: Pre-tokenisation: a word, one punctuation character, or a newline; other whitespace is dropped.
WORD_PATTERN = r"\w+|[^\w\s]|\n"

_TEMPLATE_WORDS = (
    # prompt frame and observation sentences (bidijax.envs.text)
    "Goal of the agent : Observation Action You see a an wall step steps forward left right and carry , "
    # missions
    "go to the get green goal square use key open door then task"
)


def vocabulary(extra_words=()) -> list[str]:
    """The token strings: special tokens, then every BabyAI-Text word (sorted), then ``"\\n"``."""
    words = set(_TEMPLATE_WORDS.split())
    words.update(C.COLOR_NAMES, C.OBJECT_NAMES, C.STATE_NAMES)
    words.update(str(n) for n in range(10))  # step counts and task numbers
    for text in tuple(C.ACTION_STRINGS) + tuple(extra_words):
        words.update(re.findall(r"\w+|[^\w\s]", text))
    return list(SPECIAL_TOKENS) + sorted(words) + ["\n"]


def build_tokenizer(extra_words=()):
    """A ``PreTrainedTokenizerFast`` over ``vocabulary(extra_words)`` (``save_pretrained``-able)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary(extra_words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)
    core.decoder = decoders.WordPiece()  # joins tokens with spaces (decoding is for display only)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=512,
    )


def save_tokenizer(tokenizer, path: str) -> None:
    """``save_pretrained``, naming the class ``PreTrainedTokenizerFast`` so that every
    transformers version (4.x and 5.x) loads it with ``AutoTokenizer``."""
    tokenizer.save_pretrained(path)
    config_path = os.path.join(path, "tokenizer_config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
