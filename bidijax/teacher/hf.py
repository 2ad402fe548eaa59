"""``HFTeacher``: a Hugging Face language model that scores action strings given BabyAI-Text prompts.

For a prompt and an action string the teacher computes ``log p(action tokens | prompt)``, the sum
of the action's token log-probabilities (divided by the token count with ``length_norm``), and
turns the scores of the action set into probabilities ``softmax(logp / temperature)``.

- Causal LMs: the input is the prompt's tokens followed by the tokens of ``" " + action``; only
  the action tokens are scored. A batch of prompts runs once (left-padded, with position ids
  counted from each prompt's first real token); its key/value cache is then repeated for every
  action and the action tokens are run on top of it.
- Seq2seq LMs: the encoder reads the prompt (once per prompt, then repeated for every action);
  the decoder target is the action's tokens, by default *without* the end-of-sequence token the
  tokenizer may append, so the score is that of the action string as a prefix of the answer (no
  bias against multi-token actions from an extra EOS factor). ``score_eos=True`` scores the
  end-of-sequence token too (for causal and seq2seq models), as Lamorel's scoring does: the
  score is then that of the action string as the whole answer.

``score`` caches probabilities by situation key for the current ``version`` of the teacher;
``invalidate()`` (called after fine-tuning) starts a new version with an empty cache.

``update(feedback, keys)`` fine-tunes the model on the student's feedback (objective and
configuration in ``bidijax.teacher.finetune``), ``rescore(keys)`` scores known situations again
after an update, and ``save(dir)`` / ``load(dir)`` write and restore the full state.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import time
import warnings

import numpy as np
import torch

from bidijax.envs import constants as C
from bidijax.hints import key64

from .finetune import FinetuneConfig, draw, plan, torch_steps
from .models import resolve_model
from .protocol import HintRows

MODEL_TYPES = ("auto", "causal", "seq2seq")
def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def _load(what: str, model: str, fn):
    """``fn()``, its failure one ``ValueError`` line; the hub client's retry warnings (one per
    attempt when offline) are held back, the final error says it all."""
    import logging

    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        return fn()
    except Exception as err:  # transformers raises OSError, ValueError, KeyError, ... with long texts
        where = "directory" if os.path.isdir(model) else "hub id"
        raise ValueError(f"cannot load the {what} of model {where} {model!r}: {_first_line(err)}") from None
    finally:
        hub.setLevel(level)


class HFTeacher:
    """A Hugging Face causal or seq2seq LM scoring ``action_strings`` for BabyAI-Text prompts.

    ``model``: ``"default"`` (the shipped model), a local model directory or a hub id.
    ``model_type``: ``"auto"`` (seq2seq when ``config.is_encoder_decoder``), ``"causal"`` or
    ``"seq2seq"``. ``batch_size``: prompts per forward pass (each expanded to every action).
    ``device``: defaults to CUDA when available, else CPU. ``seed`` seeds the teacher's own
    torch generator (``self.generator``) for later fine-tuning; scoring is deterministic.
    ``finetune``: a ``FinetuneConfig`` for ``update`` (default: ``FinetuneConfig()``).
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
        score_eos: bool = False,
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
        self.score_eos = bool(score_eos)
        self.batch_size = int(batch_size)
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.finetune = finetune if finetune is not None else FinetuneConfig()
        if not isinstance(self.finetune, FinetuneConfig):
            raise ValueError(f"finetune must be a FinetuneConfig, got {type(self.finetune).__name__}")
        self._lora = self.finetune.lora_rank > 0
        self.reference = None  # full fine-tuning: frozen copy of the weights, made by the first update
        self.optimizer = None  # AdamW, made by the first update

        config = _load("config", self.path, lambda: AutoConfig.from_pretrained(self.path))
        if model_type == "auto":
            model_type = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
        self.model_type = model_type
        self.tokenizer = _load("tokenizer", self.path, lambda: AutoTokenizer.from_pretrained(self.path))
        auto = AutoModelForSeq2SeqLM if model_type == "seq2seq" else AutoModelForCausalLM
        self.model = _load("weights", self.path, lambda: auto.from_pretrained(self.path, config=config))
        if self._lora:
            self.model = _with_lora(self.model, self.finetune.lora_rank, model)
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
        #: situation key -> the frozen reference's action log-probs (computed once per situation)
        self._ref_logp: dict[int, np.ndarray] = {}
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
            if self.score_eos:
                if tok.eos_token_id is None:
                    raise ValueError(f"score_eos needs an end-of-sequence token; the tokenizer of {self.model_name!r} has none")
                seq = seq + [tok.eos_token_id]
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
        # repeated per action: rows prompt-major, action-minor (i * a + j); transformers >= 5.x
        # names the key/value cache ``cache`` (``past_key_values`` before, now deprecated)
        cache = out["cache"] if "cache" in out else out.past_key_values
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
        # the class's own signature (not a wrapper's, e.g. peft's or a test's): "cache" since transformers 5.x
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        cache_arg = "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"
        out2 = self.model(input_ids=act_in, attention_mask=full_mask, position_ids=pos, use_cache=True, **{cache_arg: cache})
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
        return self._score_rows(prompts)[0]

    def _score_rows(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(probs, log_probs)``, both ``float32 [N, A]``, of the action distribution."""
        logp = torch.log_softmax(self.action_logprobs(prompts) / self.temperature, dim=-1).cpu().numpy()
        return np.exp(logp).astype(np.float32), logp.astype(np.float32)

    def _store(self, k64: list[int], prompts: list[str]) -> None:
        """Score ``prompts`` (situations ``k64``) into the cache. In version 0 the weights are the
        reference's (it is copied from them by the first step), so the log-probs also go to the
        reference's cache: most situations then never need a reference forward pass."""
        probs, logp = self._score_rows(prompts)
        for k, text, row, ref in zip(k64, prompts, probs, logp):
            self._cache[k] = row
            self.prompts[k] = text
            if self.version == 0:
                self._ref_logp.setdefault(k, ref)

    # -- situations ----------------------------------------------------------------------------

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

    def score(self, keys, missions, percepts, oracle=None) -> HintRows:
        """Probabilities for situations, as rows for ``hints.merge``: ``HintRows(uint32 [N, 2], float32 [N, A])``.

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
            self._store([k64[i] for i in todo], prompt(missions[idx].reshape(len(idx), -1), sub))
        out = np.stack([self._cache[k] for k in k64]) if k64 else np.zeros((0, len(self.action_strings)), np.float32)
        return HintRows(keys, out.astype(np.float32))

    # -- fine-tuning from the student's feedback -------------------------------------------------

    @property
    def trained(self) -> bool:
        """Whether ``update`` has taken a step (the optimizer and the reference exist)."""
        return self.optimizer is not None

    def _prepare_training(self) -> None:
        """Create the frozen reference and the AdamW optimizer (once, before the first step)."""
        if self.optimizer is not None:
            return
        if not self._lora:  # LoRA's reference is the base model: adapters switched off
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.finetune.lr, weight_decay=self.finetune.weight_decay)

    def _reference_logprobs(self, prompts: list[str]) -> torch.Tensor:
        """``[N, A]`` log-probabilities of the reference's action distribution (no gradient)."""
        with torch.no_grad():
            if self._lora:
                with self.model.disable_adapter():
                    logp = self.action_logprobs(prompts)
            else:
                current, self.model = self.model, self.reference
                try:
                    logp = self.action_logprobs(prompts)
                finally:
                    self.model = current
        return torch.log_softmax(logp / self.temperature, dim=-1)

    def _reference_rows(self, k64: list[int]) -> torch.Tensor:
        """``[N, A]`` reference log-probs of known situations, each computed once and cached (the
        reference is frozen, so a situation's row never changes)."""
        todo = [k for k in dict.fromkeys(k64) if k not in self._ref_logp]
        if todo:
            for k, row in zip(todo, self._reference_logprobs([self.prompts[k] for k in todo]).cpu().numpy()):
                self._ref_logp[k] = row.astype(np.float32)
        return torch.from_numpy(np.stack([self._ref_logp[k] for k in k64])).to(self.device)

    def _draw(self, probs: np.ndarray, n: int) -> torch.Tensor:
        """``n`` situation indices drawn with replacement with ``probs``, from the teacher's generator."""
        return draw(probs, n, self.generator)

    def update(self, feedback, keys) -> dict:
        """Fine-tune on the student's feedback (the RL -> LM direction); returns statistics.

        ``feedback``: a ``bidijax.feedback.Feedback`` (numpy or jax arrays, ``[K, A]`` and visits
        ``[K]``) whose row ``k`` is the situation ``keys[k]`` (``uint32 [K, 2]``, the hint table's
        keys when the student updated). Only situations this teacher has scored (whose prompt it
        knows) are used. Takes ``finetune.steps`` AdamW steps on the objective of
        ``bidijax.teacher.finetune`` with situations drawn from ``self.generator``. The model
        stays in eval mode throughout (dropout off, so a step is a deterministic function of the
        weights, the batch and the optimizer state). After a step the teacher is a new version
        (``invalidate``: cached probabilities dropped). Without a known visited situation, or
        without signal (every target 0, e.g. all advantages equal), nothing happens (``steps`` 0,
        losses NaN, same version): a KL-only step at the reference would only move the weights by
        Adam-normalised rounding noise.

        Returns ``loss``, ``pg_loss``, ``kl`` (means over the steps), ``num_situations`` (known
        visited situations that could be drawn), ``steps`` and ``examples_per_s`` (situations
        through the model per second: one drawn several times in a step is computed once).
        """
        fc, num_actions = self.finetune, len(self.action_strings)
        keys = np.asarray(keys).astype(np.uint32).reshape(-1, 2)
        count = np.asarray(feedback.count)
        if count.shape != (len(keys), num_actions) or np.shape(feedback.visits) != (len(keys),):
            raise ValueError(
                f"feedback has count {count.shape} and visits {np.shape(feedback.visits)} for {len(keys)} keys; "
                f"expected [{len(keys)}, {num_actions}] and [{len(keys)}]"
            )
        k64, probs, weight = plan(feedback, keys, self.prompts, fc)
        stats = {"loss": float("nan"), "pg_loss": float("nan"), "kl": float("nan")}
        stats.update(num_situations=0 if probs is None else int(np.sum(probs > 0)), steps=0, examples_per_s=0.0)
        if probs is None or not weight.any():  # nothing to learn from: the weights stay exactly as they are
            return stats
        self._prepare_training()
        start = time.perf_counter()
        draws = self._draw(probs, fc.steps * fc.batch_size).view(fc.steps, fc.batch_size).numpy()

        def log_probs(rows):  # with a gradient, at the teacher's temperature
            return torch.log_softmax(self.action_logprobs([self.prompts[k64[i]] for i in rows], grad=True) / self.temperature, dim=-1)

        params = [p for p in self.model.parameters() if p.requires_grad]
        reference = lambda rows: self._reference_rows([k64[i] for i in rows])
        history, computed = torch_steps(draws, weight, log_probs, reference, self.optimizer, params, fc)
        self.model.eval()
        self.invalidate()
        seconds = time.perf_counter() - start
        loss, pg, kl = np.mean(history, axis=0)
        stats.update(loss=float(loss), pg_loss=float(pg), kl=float(kl), steps=fc.steps)
        stats["examples_per_s"] = computed / max(seconds, 1e-9)
        return stats

    def rescore(self, keys) -> HintRows:
        """Rows ``HintRows(keys, probs)`` for situations this teacher already knows, by key alone.

        Their stored prompts are scored with the current weights in one batch (keys already
        scored in this version come from the cache). Keys never scored (no prompt) are left out,
        so the result may have fewer rows than ``keys``. For the loop, after ``update``, on the
        ``finetune.most_visited`` rows of the hint table.
        """
        keys = np.asarray(keys).astype(np.uint32).reshape(-1, 2)
        k64 = key64(keys).tolist()
        known = [i for i, k in enumerate(k64) if k in self.prompts]
        todo = list({k64[i]: i for i in known if k64[i] not in self._cache}.values())
        if todo:
            self._store([k64[i] for i in todo], [self.prompts[k64[i]] for i in todo])
        probs = [self._cache[k64[i]] for i in known]
        out = np.stack(probs) if probs else np.zeros((0, len(self.action_strings)), np.float32)
        return HintRows(keys[known], out.astype(np.float32))

    def forget(self, keys) -> None:
        """Drop everything kept about these situations (prompt, cached and reference scores):
        the loop calls it for rows evicted from a bounded hint table."""
        for k in key64(np.asarray(keys).astype(np.uint32).reshape(-1, 2)).tolist():
            self._cache.pop(k, None)
            self._ref_logp.pop(k, None)
            self.prompts.pop(k, None)

    # -- checkpoints -----------------------------------------------------------------------------

    def save(self, directory: str) -> None:
        """Write the full state into ``directory`` (created if needed).

        ``model.safetensors`` (current weights), ``reference.safetensors`` (the frozen reference,
        full fine-tuning after the first update), ``optimizer.pt`` (AdamW state, tensors only),
        ``state.npz`` (cached probabilities and reference log-probs by key, the generator's state)
        and ``teacher.json`` (version, prompts by key, configuration). Nothing is pickled.
        """
        from safetensors.torch import save_model

        os.makedirs(directory, exist_ok=True)
        path = lambda name: os.path.join(directory, name)
        save_model(self.model, path("model.safetensors"))
        if self.reference is not None:
            save_model(self.reference, path("reference.safetensors"))
        if self.optimizer is not None:
            torch.save(self.optimizer.state_dict(), path("optimizer.pt"))
        cache_keys, cache_probs = _table_of(self._cache, len(self.action_strings))
        ref_keys, ref_logp = _table_of(self._ref_logp, len(self.action_strings))
        np.savez(
            path("state.npz"),
            cache_keys=cache_keys,
            cache_probs=cache_probs,
            ref_keys=ref_keys,
            ref_logp=ref_logp,
            generator=self.generator.get_state().numpy(),
        )
        meta = {
            "format": 1, "model": self.model_name, "model_type": self.model_type,
            "action_strings": list(self.action_strings), "temperature": self.temperature,
            "length_norm": self.length_norm, "score_eos": self.score_eos, "finetune": dataclasses.asdict(self.finetune),
            "version": self.version, "trained": self.trained,
            "prompts": {str(k): v for k, v in self.prompts.items()},
        }  # fmt: skip
        with open(path("teacher.json"), "w") as f:
            json.dump(meta, f)

    def load(self, directory: str) -> None:
        """Restore, in place, a state written by ``save`` for a teacher of the same model.

        Weights, reference, optimizer, caches, prompts, version, generator and configuration
        (temperature, length normalisation, fine-tuning) all come from ``directory``: scores and
        following updates are exactly those of the teacher that was saved.
        """
        from safetensors.torch import load_model

        path = lambda name: os.path.join(directory, name)
        try:
            with open(path("teacher.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError) as err:
            raise ValueError(f"no teacher state in {directory!r}: {_first_line(err)}") from None
        saved = (meta["model_type"], tuple(meta["action_strings"]), meta["finetune"]["lora_rank"], meta.get("score_eos", False))
        ours = (self.model_type, self.action_strings, self.finetune.lora_rank, self.score_eos)
        if saved != ours:
            raise ValueError(
                f"teacher state in {directory!r} has (model_type, action_strings, lora_rank, score_eos) {saved}; "
                f"this teacher has {ours}"
            )
        device = str(self.device)
        try:
            load_model(self.model, path("model.safetensors"), device=device)
            self.reference, self.optimizer = None, None
            if meta["trained"]:
                self._prepare_training()
                if self.reference is not None:
                    load_model(self.reference, path("reference.safetensors"), device=device)
                self.optimizer.load_state_dict(torch.load(path("optimizer.pt"), map_location=device, weights_only=True))
        except Exception as err:  # wrong architecture, missing or damaged files
            raise ValueError(f"cannot load the teacher state in {directory!r}: {_first_line(err)}") from None
        self.model.eval()
        with np.load(path("state.npz")) as z:
            self._cache = {int(k): row for k, row in zip(z["cache_keys"], z["cache_probs"])}
            self._ref_logp = {int(k): row for k, row in zip(z["ref_keys"], z["ref_logp"])} if "ref_keys" in z else {}
            self.generator.set_state(torch.from_numpy(z["generator"]))
        self.prompts = {int(k): v for k, v in meta["prompts"].items()}
        self.version = int(meta["version"])
        self.temperature, self.length_norm = float(meta["temperature"]), bool(meta["length_norm"])
        self.finetune = FinetuneConfig(**meta["finetune"])
        for group in self.optimizer.param_groups if self.optimizer is not None else ():
            group.update(lr=self.finetune.lr, weight_decay=self.finetune.weight_decay)


def _table_of(rows: dict[int, np.ndarray], num_actions: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``key -> row`` dict as arrays ``(uint64 [N], float32 [N, A])``, sorted by key."""
    keys = sorted(rows)
    values = np.stack([rows[k] for k in keys]) if keys else np.zeros((0, num_actions), np.float32)
    return np.asarray(keys, np.uint64), values.astype(np.float32)


def _with_lora(model, rank: int, name: str):
    """``model`` wrapped by ``peft`` with LoRA adapters of ``rank`` (peft's default target modules)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError(f"finetune lora_rank={rank} needs the peft package: pip install 'bidijax[lora]'") from None
    try:
        with warnings.catch_warnings():  # peft switches fan_in_fan_out on for GPT-2's Conv1D itself
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
            return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0))
    except Exception as err:
        raise ValueError(f"cannot add LoRA adapters to model {name!r}: {_first_line(err)}") from None
