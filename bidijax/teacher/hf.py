"""``HFTeacher``: a Hugging Face language model that scores action strings given BabyAI-Text prompts.

For a prompt and an action string the teacher computes ``log p(action tokens | prompt)``, the sum
of the action's token log-probabilities (divided by the token count with ``length_norm``), and
turns the scores of the action set into probabilities ``softmax(logp / temperature)``.

- Causal LMs: the input is the prompt's tokens followed by the tokens of ``" " + action``; only
  the action tokens are scored. A batch of prompts runs once (left-padded, with position ids
  counted from each prompt's first real token); its key/value cache is then repeated for every
  action and the action tokens are run on top of it.
- Seq2seq LMs: the encoder reads the prompt (once per prompt, then repeated for every action);
  the decoder target is the action's tokens, *without* the end-of-sequence token the tokenizer
  may append, so the score is that of the action string as a prefix of the answer (no bias
  against multi-token actions from an extra EOS factor).

``score`` caches probabilities by situation key for the current ``version`` of the teacher;
``invalidate()`` (called after fine-tuning) starts a new version with an empty cache.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import time

import numpy as np
import torch

from bidijax.envs import constants as C
from bidijax.hints import key64

from .finetune import FinetuneConfig, targets

MODEL_TYPES = ("auto", "causal", "seq2seq")
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


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


def _load(what: str, model: str, fn):
    try:
        return fn()
    except Exception as err:  # transformers raises OSError, ValueError, KeyError, ... with long texts
        where = "directory" if os.path.isdir(model) else "hub id"
        raise ValueError(f"cannot load the {what} of model {where} {model!r}: {_first_line(err)}") from None


class HFTeacher:
    """A Hugging Face causal or seq2seq LM scoring ``action_strings`` for BabyAI-Text prompts.

    ``model``: ``"default"`` (the shipped model), a local model directory or a hub id.
    ``model_type``: ``"auto"`` (seq2seq when ``config.is_encoder_decoder``), ``"causal"`` or
    ``"seq2seq"``. ``batch_size``: prompts per forward pass (each expanded to every action).
    ``device``: defaults to CUDA when available, else CPU. ``seed`` seeds the teacher's own
    torch generator (``self.generator``) for later fine-tuning; scoring is deterministic.
    """

    def __init__(
        self,
        model: str = "default",
        model_type: str = "auto",
        temperature: float = 1.0,
        length_norm: bool = False,
        batch_size: int = 64,
        device=None,
        seed: int = 0,
        action_strings=C.ACTION_STRINGS,
        finetune: FinetuneConfig | None = None,
    ):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        if model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {model_type!r}; allowed: {', '.join(MODEL_TYPES)}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.action_strings = tuple(action_strings)
        if not self.action_strings:
            raise ValueError("action_strings must not be empty")
        self.model_name = model
        self.path = resolve_model(model)
        self.temperature = float(temperature)
        self.length_norm = bool(length_norm)
        self.batch_size = int(batch_size)
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.finetune = finetune or FinetuneConfig()
        self.reference = None  # frozen copy of the weights before the first update
        self.optimizer = None

        config = _load("config", self.path, lambda: AutoConfig.from_pretrained(self.path))
        if model_type == "auto":
            model_type = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
        self.model_type = model_type
        self.tokenizer = _load("tokenizer", self.path, lambda: AutoTokenizer.from_pretrained(self.path))
        auto = AutoModelForSeq2SeqLM if model_type == "seq2seq" else AutoModelForCausalLM
        self.model = _load("weights", self.path, lambda: auto.from_pretrained(self.path, config=config))
        if self.finetune.lora_rank > 0:
            self.model = _with_lora(self.model, self.finetune.lora_rank)
        self.model.to(self.device).eval()

        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        probe = tok("a", add_special_tokens=True)["input_ids"]
        self._strip_eos = model_type == "causal" and tok.eos_token_id is not None and probe[-1:] == [tok.eos_token_id]
        self._context = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if model_type == "seq2seq":
            cfg = self.model.config
            start = getattr(cfg, "decoder_start_token_id", None)
            self._decoder_start = start if start is not None else (cfg.pad_token_id if cfg.pad_token_id is not None else cfg.bos_token_id)
            if self._decoder_start is None:
                raise ValueError(f"model {model!r} defines no decoder_start_token_id (nor pad/bos token ids)")
        self._encode_actions()

        self.version = 0
        self._cache: dict[int, np.ndarray] = {}
        #: situation key (64-bit int ``hi << 32 | lo``) -> prompt text, for every key ever scored
        self.prompts: dict[int, str] = {}

    # -- tokens --------------------------------------------------------------------------------

    def _encode_actions(self):
        """Token ids of every action string ([A, L] right-padded, mask, lengths), validated."""
        tok = self.tokenizer
        ids = []
        for action in self.action_strings:
            text = action if self.model_type == "seq2seq" else " " + action
            seq = tok(text, add_special_tokens=False)["input_ids"]
            if not seq or (tok.unk_token_id is not None and tok.unk_token_id in seq):
                raise ValueError(
                    f"action string {action!r} cannot be encoded by the tokenizer of {self.model_name!r} "
                    f"({'no tokens' if not seq else 'unknown token'}); use words of its vocabulary"
                )
            ids.append(seq)
        width = max(len(s) for s in ids)
        self._action_ids = torch.tensor([s + [self._pad] * (width - len(s)) for s in ids], device=self.device)
        self._action_mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids], device=self.device)
        self.action_lengths = torch.tensor([len(s) for s in ids], device=self.device)

    def _prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        out = []
        for seq in self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]:
            if self._strip_eos and seq and seq[-1] == self.tokenizer.eos_token_id:
                seq = seq[:-1]
            if not seq and self._context is not None:
                seq = [self._context]  # a causal LM needs one token to predict the first action token from
            if not seq:
                raise ValueError("empty prompt and the tokenizer has no bos/eos token to stand for it")
            out.append(seq)
        return out

    def _pad_batch(self, seqs: list[list[int]], left: bool):
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            sl = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, sl] = torch.tensor(s, dtype=torch.long)
            mask[i, sl] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- scoring -------------------------------------------------------------------------------

    def _token_logprobs(self, logits, targets, mask):
        """Sum over positions of ``log softmax(logits)[target]`` where ``mask`` is 1."""
        logits = logits.float()
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        return (picked * mask).sum(-1)

    def _causal_chunk(self, prompt_ids: list[list[int]]):
        n, a = len(prompt_ids), len(self.action_strings)
        ids, mask = self._pad_batch(prompt_ids, left=True)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        # first action token: predicted by the prompt's last position (real, thanks to left padding)
        last = out.logits[:, -1].float()
        first = last.gather(-1, self._action_ids[:, 0].expand(n, a)) - torch.logsumexp(last, -1, keepdim=True)
        width = self._action_ids.shape[1]
        if width == 1:
            return first
        # the other action tokens: run tokens 0..L-2 of every action on the repeated prompt cache
        cache = out.past_key_values  # repeated per action: rows prompt-major, action-minor (i * a + j)
        if hasattr(cache, "batch_repeat_interleave"):
            cache.batch_repeat_interleave(a)
        elif isinstance(cache, (tuple, list)):  # legacy per-layer (key, value) tuples
            cache = tuple(tuple(t.repeat_interleave(a, 0) for t in layer) for layer in cache)
        else:
            raise ValueError(f"model {self.model_name!r} returns no expandable key/value cache; it cannot be scored")
        act_in = self._action_ids[:, :-1].repeat(n, 1)
        act_mask = self._action_mask.repeat(n, 1)
        full_mask = torch.cat([mask.repeat_interleave(a, 0), act_mask[:, :-1]], dim=1)
        start = mask.sum(-1).repeat_interleave(a)  # position of each action's first token
        pos = start[:, None] + torch.arange(width - 1, device=self.device)[None, :]
        out2 = self.model(input_ids=act_in, attention_mask=full_mask, position_ids=pos, past_key_values=cache, use_cache=True)
        rest = self._token_logprobs(out2.logits, self._action_ids[:, 1:].repeat(n, 1), act_mask[:, 1:])
        return first + rest.view(n, a)

    def _seq2seq_chunk(self, prompt_ids: list[list[int]]):
        from transformers.modeling_outputs import BaseModelOutput

        n, a = len(prompt_ids), len(self.action_strings)
        ids, mask = self._pad_batch(prompt_ids, left=False)
        encoded = self.model.get_encoder()(input_ids=ids, attention_mask=mask)
        hidden = encoded.last_hidden_state.repeat_interleave(a, 0)  # row = i * a + j
        start = torch.full((a, 1), self._decoder_start, dtype=torch.long, device=self.device)
        dec_in = torch.cat([start, self._action_ids[:, :-1]], dim=1)
        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            attention_mask=mask.repeat_interleave(a, 0),
            decoder_input_ids=dec_in.repeat(n, 1),
            use_cache=False,
        )
        scores = self._token_logprobs(out.logits, self._action_ids.repeat(n, 1), self._action_mask.repeat(n, 1))
        return scores.view(n, a)

    def action_logprobs(self, prompts: list[str], grad: bool = False) -> torch.Tensor:
        """``float32 [N, A]``: ``log p(action | prompt)`` (per token with ``length_norm``).

        With ``grad=True`` the autograd graph is kept (for fine-tuning); the model's mode is not
        changed (it is in eval mode unless the caller switched it).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            return torch.zeros((0, len(self.action_strings)), device=self.device)
        chunk = self._seq2seq_chunk if self.model_type == "seq2seq" else self._causal_chunk
        ids = self._prompt_ids(prompts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # batches of similar lengths
        with torch.set_grad_enabled(grad):
            parts = [
                chunk([ids[i] for i in order[b : b + self.batch_size]]) for b in range(0, len(ids), self.batch_size)
            ]
            logp = torch.cat(parts)[torch.argsort(torch.tensor(order, device=self.device))]
            if self.length_norm:
                logp = logp / self.action_lengths.to(logp.dtype)
        return logp

    def score_prompts(self, prompts: list[str]) -> np.ndarray:
        """``float32 [N, A]`` action probabilities ``softmax(logp / temperature)`` for the prompts."""
        logp = self.action_logprobs(prompts)
        return torch.softmax(logp / self.temperature, dim=-1).cpu().numpy().astype(np.float32)

    # -- situations ----------------------------------------------------------------------------

    #: a language model needs no oracle actions (see ``scripted.ScriptedTeacher.needs_oracle``)
    needs_oracle = False

    @staticmethod
    def key64(key) -> int:
        """The 64-bit number ``hi << 32 | lo`` of a situation key (pair ``uint32[2]`` or int)."""
        if isinstance(key, (int, np.integer)):
            return int(key)
        return int(key64(np.asarray(key).reshape(-1)[:2])[0])

    def prompt_of(self, key) -> str:
        """Prompt text of a situation key scored by this teacher (any version)."""
        return self.prompts[self.key64(key)]

    def invalidate(self) -> None:
        """Start a new teacher version (after fine-tuning): cached probabilities are dropped."""
        self.version += 1
        self._cache.clear()

    def score(self, keys, missions, percepts, oracle=None):
        """Probabilities for situations, as rows for ``hints.merge``: ``(uint32 [N, 2], float32 [N, A])``.

        ``keys`` are situation keys, ``missions`` ``int32 [N, 4]``, ``percepts`` a batched
        ``Percept`` (numpy or jax arrays). Keys scored in the current version come from the cache;
        the others are rendered with ``bidijax.envs.text.prompt`` and scored in one batch.
        ``oracle`` is ignored (accepted for the scripted teachers' interface).
        """
        import jax

        from bidijax.envs.text import prompt

        keys = np.asarray(keys).astype(np.uint32).reshape(-1, 2)
        missions = np.asarray(missions)
        k64 = key64(keys).tolist()
        todo, seen = [], set()
        for i, k in enumerate(k64):
            if k not in self._cache and k not in seen:
                seen.add(k)
                todo.append(i)
        if todo:
            idx = np.asarray(todo)
            sub = jax.tree.map(lambda x: np.asarray(x)[idx], percepts)
            texts = prompt(missions[idx].reshape(len(idx), -1), sub)
            probs = self.score_prompts(texts)
            for i, text, row in zip(todo, texts, probs):
                self._cache[k64[i]] = row
                self.prompts[k64[i]] = text
        out = np.stack([self._cache[k] for k in k64]) if k64 else np.zeros((0, len(self.action_strings)), np.float32)
        return keys, out.astype(np.float32)

    # -- fine-tuning from the student's feedback ---------------------------------------------------

    #: the loop fine-tunes and re-scores teachers that learn (scripted teachers do not)
    learns = True

    @contextlib.contextmanager
    def _scoring_with(self, model):
        saved, self.model = self.model, model
        try:
            yield
        finally:
            self.model = saved

    def _prepare_training(self) -> None:
        if self.reference is None:
            if self.finetune.lora_rank > 0:
                self.reference = _AdaptersOff(self.model)
            else:
                self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        if self.optimizer is None:
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(params, lr=self.finetune.lr, weight_decay=self.finetune.weight_decay)

    def update(self, feedback, keys) -> dict:
        """Fine-tune on the student's feedback; ``keys`` (``uint32 [K, 2]``) names feedback row ``k``.

        Situations are sampled in proportion to their visits among those this teacher has scored
        (their prompts are known); see ``finetune`` for the objective. Afterwards the teacher is a
        new version (cache dropped). Returns statistics (``loss``, ``pg_loss``, ``kl``, ...).
        """
        fc = self.finetune
        k64 = key64(np.asarray(keys, np.uint32).reshape(-1, 2)).tolist()
        known = np.asarray([k in self.prompts for k in k64], bool)
        weight = targets(feedback, fc.signal, fc.min_count, rows=known)
        visits = np.asarray(feedback.visits, np.float64) * known * np.any(weight != 0, axis=1)
        if visits.sum() <= 0:
            return {"steps": 0, "num_situations": 0}
        self._prepare_training()
        start = time.perf_counter()
        probs = torch.tensor(visits / visits.sum(), dtype=torch.float64)
        params = [p for p in self.model.parameters() if p.requires_grad]
        stats = []
        for _ in range(fc.steps):
            idx = torch.multinomial(probs, fc.batch_size, replacement=True, generator=self.generator).numpy()
            prompts = [self.prompts[k64[i]] for i in idx]
            logp = torch.log_softmax(self.action_logprobs(prompts, grad=True) / self.temperature, -1)
            with torch.no_grad(), self._scoring_with(self.reference):
                ref = torch.log_softmax(self.action_logprobs(prompts) / self.temperature, -1)
            w = torch.as_tensor(weight[idx], device=logp.device)
            pg = -(w * logp).sum(-1).mean()
            kl = (logp.exp() * (logp - ref)).sum(-1).mean()
            loss = pg + fc.kl_coef * kl
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if fc.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, fc.max_grad_norm)
            self.optimizer.step()
            stats.append((loss.item(), pg.item(), kl.item()))
        self.invalidate()
        secs = time.perf_counter() - start
        loss, pg, kl = np.mean(stats, axis=0)
        return {
            "loss": float(loss), "pg_loss": float(pg), "kl": float(kl), "steps": fc.steps,
            "num_situations": int(np.sum(visits > 0)), "examples_per_s": fc.steps * fc.batch_size / max(secs, 1e-9),
        }  # fmt: skip

    def rescore(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """Score situations this teacher already knows (by key) with its current weights.

        Returns rows ``(keys, probs)`` for the known keys (unknown ones are left out).
        """
        keys = np.asarray(keys, np.uint32).reshape(-1, 2)
        k64 = key64(keys).tolist()
        known = [i for i, k in enumerate(k64) if k in self.prompts]
        todo = [i for i in known if k64[i] not in self._cache]
        if todo:
            for i, row in zip(todo, self.score_prompts([self.prompts[k64[i]] for i in todo])):
                self._cache[k64[i]] = row
        probs = np.stack([self._cache[k64[i]] for i in known]) if known else np.zeros((0, len(self.action_strings)))
        return keys[known], probs.astype(np.float32)

    # -- checkpoints -----------------------------------------------------------------------------

    def save(self, directory: str) -> None:
        """Write the full state (weights, reference, optimizer, cache, prompts, version, RNG)."""
        os.makedirs(directory, exist_ok=True)
        torch.save(self.model.state_dict(), os.path.join(directory, "model.pt"))
        if self.reference is not None and not isinstance(self.reference, _AdaptersOff):
            torch.save(self.reference.state_dict(), os.path.join(directory, "reference.pt"))
        if self.optimizer is not None:
            torch.save(self.optimizer.state_dict(), os.path.join(directory, "optimizer.pt"))
        torch.save(self.generator.get_state(), os.path.join(directory, "generator.pt"))
        cached = sorted(self._cache)
        np.savez(
            os.path.join(directory, "cache.npz"),
            keys=np.asarray(cached, np.uint64),
            probs=np.stack([self._cache[k] for k in cached]) if cached else np.zeros((0, len(self.action_strings)), np.float32),
        )
        meta = {
            "model": self.model_name, "version": self.version, "trained": self.reference is not None,
            "prompts": {str(k): v for k, v in self.prompts.items()},
        }  # fmt: skip
        with open(os.path.join(directory, "teacher.json"), "w") as f:
            json.dump(meta, f)

    def load(self, directory: str) -> None:
        """Restore a state written by ``save`` into this teacher (same model architecture)."""
        with open(os.path.join(directory, "teacher.json")) as f:
            meta = json.load(f)
        self.model.load_state_dict(torch.load(os.path.join(directory, "model.pt"), weights_only=True))
        self.reference, self.optimizer = None, None
        if meta["trained"]:
            self._prepare_training()
            ref = os.path.join(directory, "reference.pt")
            if os.path.exists(ref):
                self.reference.load_state_dict(torch.load(ref, weights_only=True))
            opt = os.path.join(directory, "optimizer.pt")
            if os.path.exists(opt):
                self.optimizer.load_state_dict(torch.load(opt, weights_only=True))
        self.generator.set_state(torch.load(os.path.join(directory, "generator.pt"), weights_only=True))
        with np.load(os.path.join(directory, "cache.npz")) as z:
            self._cache = {int(k): row for k, row in zip(z["keys"], z["probs"])}
        self.prompts = {int(k): v for k, v in meta["prompts"].items()}
        self.version = int(meta["version"])


class _AdaptersOff:
    """The LoRA-wrapped model with its adapters disabled: the frozen reference of a LoRA teacher."""

    def __init__(self, model):
        self.model = model

    def __call__(self, *args, **kwargs):
        with self.model.disable_adapter():
            return self.model(*args, **kwargs)

    def get_encoder(self):
        return _AdaptersOff(self.model.get_encoder()) if hasattr(self.model, "disable_adapter") else self.model.get_encoder()

    def eval(self):
        return self


def _with_lora(model, rank: int):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError(f"lora_rank={rank} needs the peft package: pip install peft") from None
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0))
