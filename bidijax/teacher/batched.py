"""Every seed's GPT-2 teacher in one JAX program: scoring and fine-tuning stacked over seeds.

``GPT2Teachers(model, seeds, ...)`` holds ``S`` copies of a Hugging Face GPT-2 (the shipped
default teacher, or any ``GPT2LMHeadModel``) as one pytree with a leading seed axis
(``gpt2_jax``), and per seed the bookkeeping ``HFTeacher`` keeps: a version, the probabilities
cached for it, the prompts and token ids of the situations scored, the frozen reference's
log-probs, and a seeded torch generator that draws the fine-tuning batches. Its methods take and
return one entry per seed (the ``bidijax.teaching`` contract) and run all seeds in one jitted,
vmapped call:

- ``score(requests)``: the seeds' new situations, in chunks of ``chunk`` prompts per seed;
- ``update(items)``: ``finetune.steps`` steps of the objective of ``bidijax.teacher.finetune``
  (the same targets, draws and loss as ``HFTeacher.update``; AdamW and gradient clipping from
  optax), seeds without signal left exactly as they were;
- ``rescore(keys)``: known situations with the current weights.

Shapes are padded to fixed sizes (``chunk`` prompts, ``batch_size`` draws, prompt lengths in
multiples of 16 tokens) so the programs compile a few times per run, not once per call. Seed
``i``'s numbers do not depend on the other seeds (up to float rounding: the padded shapes do).
``save(i, dir)`` / ``load(i, dir)``: one seed's state, its weights as a Hugging Face
``model.safetensors``.

Per-lane numbers: ``temperature`` and ``finetune`` may be sequences (one per seed; the lanes of a
sweep's cells). The finetune configs may differ only in ``lr`` and ``kl_coef``, which enter the
vmapped programs as per-seed arrays, as the temperature does.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from bidijax.envs import constants as C
from bidijax.hints import key64

from . import gpt2_jax as G
from . import finetune
from .finetune import FinetuneConfig, draw, feedback_loss_jax
from .hf import HFTeacher, _table_of
from .protocol import HintRows, ScoreRequest

LENGTH_BUCKET = 16  # prompt tokens
ROW_BUCKET = 32  # situations per seed in a call


def _bucket(n: int, size: int) -> int:
    return max(size, -(-n // size) * size)


def _per_lane(name: str, value, s: int) -> list:
    """``value`` for each of ``s`` seeds: a sequence of ``s`` values, or one value for all."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * s
    if len(values) != s:
        raise ValueError(f"{name} has {len(values)} values for {s} seeds; give one per seed or a single value")
    return values


@functools.lru_cache(maxsize=16)
def _programs(spec: G.Spec, actions: tuple, length_norm: bool, objective: str, max_grad_norm: float, weight_decay: float):
    """``(tx, score, score_one, step)``: the optimiser and the jitted programs of a teacher shape.

    Cached, so that every ``GPT2Teachers`` of the same model shape and settings (a resumed run,
    a sweep's programs, tests) shares one set of jitted functions and their compilations.
    ``actions``: the action token ids, their mask and their lengths, each ``(shape, dtype, values)``."""
    aid, am, lengths = (jnp.asarray(np.asarray(values, dtype).reshape(shape)) for shape, dtype, values in actions)
    lengths = lengths.astype(jnp.float32)
    clip = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm > 0 else []
    # AdamW at lr 1, scaled by each seed's lr in ``step``: exactly AdamW at that lr
    tx = optax.chain(*clip, optax.adamw(1.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay))

    def log_probs(params, pid, pm, temp):
        logp = G.action_logprobs(params, spec, pid, pm, aid, am)
        if length_norm:
            logp = logp / lengths
        return jax.nn.log_softmax(logp / temp, -1)

    def step(params, opt_state, pid, pm, ref, weight, share, active, temp, lr, kl_coef):
        def loss(p):
            pg, kl = feedback_loss_jax(log_probs(p, pid, pm, temp), ref, weight, share, objective)
            return pg + kl_coef * kl, (pg, kl)

        (value, (pg, kl)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, new_state = tx.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: u * lr, updates)
        keep = lambda new, old: jnp.where(active, new, old)
        new_params = jax.tree.map(keep, optax.apply_updates(params, updates), params)
        return new_params, jax.tree.map(keep, new_state, opt_state), jnp.stack([value, pg, kl])

    return tx, jax.jit(jax.vmap(log_probs)), jax.jit(log_probs), jax.jit(jax.vmap(step))


class GPT2Teachers:
    """``S`` GPT-2 teachers, one per seed, computed together (see the module docstring)."""

    def __init__(
        self,
        model: str = "default",
        seeds=(0,),
        temperature: float | list = 1.0,
        length_norm: bool = False,
        finetune: FinetuneConfig | list | None = None,
        action_strings=C.ACTION_STRINGS,
        score_eos: bool = False,
        chunk: int = 64,
    ):
        self.seeds = [int(s) for s in seeds]
        s = len(self.seeds)
        temps, tunes = _per_lane("temperature", temperature, s), _per_lane("finetune", finetune or FinetuneConfig(), s)
        first = tunes[0]
        for fc in tunes:
            if dataclasses.replace(fc, lr=first.lr, kl_coef=first.kl_coef) != first:
                raise ValueError(f"per-seed finetune configs may differ only in lr and kl_coef, not {fc} vs {first}")
        # a CPU torch copy: tokenizer, action tokens, and the Hugging Face files of checkpoints
        self.base = HFTeacher(
            model, temperature=temps[0], length_norm=length_norm, finetune=first, device="cpu",
            action_strings=action_strings, score_eos=score_eos,
        )  # fmt: skip
        if self.base.model_type != "causal" or self.base.model.config.model_type != "gpt2":
            raise ValueError(f"model {model!r} is not a GPT-2; the batched JAX teacher needs one (use backend 'torch')")
        if self.base.finetune.lora_rank:
            raise ValueError("the batched JAX teacher fine-tunes all weights; LoRA needs backend 'torch'")
        self.spec = G.spec_of(self.base.model.config)
        self.action_strings = self.base.action_strings
        self.length_norm = self.base.length_norm
        self.finetune, self.lane_finetune = first, tunes  # shared settings; each seed's own
        for t in temps:
            if not 0 < t < float("inf"):
                raise ValueError(f"temperature must be a finite number > 0, got {t}")
        self.temperatures = np.asarray(temps, np.float32)
        self._lanes = tuple(jnp.asarray([getattr(fc, n) for fc in tunes], jnp.float32) for n in ("lr", "kl_coef"))
        self.chunk = int(chunk)
        self.reference = jax.tree.map(jnp.asarray, G.params_from_torch(self.base.model))
        self.params = jax.tree.map(lambda x: jnp.stack([x] * s), self.reference)
        self._actions = (self.base._action_ids.numpy(), self.base._action_mask.numpy())
        self._lengths = self.base.action_lengths.numpy()
        self._compile()
        self.opt_state = jax.vmap(self._tx.init)(self.params)
        self.versions = [0] * s
        self.trained = [False] * s
        self.caches: list[dict] = [{} for _ in range(s)]
        self.ref_logp: list[dict] = [{} for _ in range(s)]
        self.prompts: list[dict] = [{} for _ in range(s)]
        self.generators = [torch.Generator().manual_seed(seed) for seed in self.seeds]
        self._ids: dict[int, list[int]] = {}  # situation key -> prompt token ids (a key's prompt is fixed)

    def __len__(self) -> int:
        return len(self.seeds)

    # -- programs ------------------------------------------------------------------------------

    def _compile(self):
        frozen = lambda a: (np.shape(a), str(np.asarray(a).dtype), tuple(np.ravel(a).tolist()))  # hashable
        fc, actions = self.finetune, tuple(frozen(a) for a in (*self._actions, self._lengths))
        self._tx, self._score, self._score_one, self._step = _programs(
            self.spec, actions, self.length_norm, fc.objective, fc.max_grad_norm, fc.weight_decay
        )

    # -- tokens --------------------------------------------------------------------------------

    def _token_ids(self, k64: list[int], prompts: list[str]) -> list[list[int]]:
        new = [(k, p) for k, p in zip(k64, prompts) if k not in self._ids]
        if new:
            for (k, _), ids in zip(new, self.base._prompt_ids([p for _, p in new])):
                self._ids[k] = ids
        return [self._ids[k] for k in k64]

    def _pad(self, seqs_per_seed: list[list[list[int]]]):
        """``[S, R, L]`` left-padded ids and masks; ``R`` and ``L`` rounded up to multiples of
        ``ROW_BUCKET`` and ``LENGTH_BUCKET`` (few shapes, few compiles); empty rows hold one
        unmasked pad token."""
        rows = _bucket(max((len(seqs) for seqs in seqs_per_seed), default=1), ROW_BUCKET)
        width = _bucket(max((len(q) for seqs in seqs_per_seed for q in seqs), default=1), LENGTH_BUCKET)
        ids = np.full((len(seqs_per_seed), rows, width), self.base._pad, np.int32)
        mask = np.zeros((len(seqs_per_seed), rows, width), np.int32)
        mask[:, :, -1] = 1
        for i, seqs in enumerate(seqs_per_seed):
            for j, q in enumerate(seqs):
                ids[i, j, width - len(q) :] = q
                mask[i, j, :] = 0
                mask[i, j, width - len(q) :] = 1
        return jnp.asarray(ids), jnp.asarray(mask)

    # -- scoring -------------------------------------------------------------------------------

    def _log_probs(self, k64_per_seed: list[list[int]]) -> list[np.ndarray]:
        """Current log-probs ``[n_i, A]`` of known situations, every seed in one program per chunk."""
        out = [[] for _ in self.seeds]
        orders = [self._by_length(ks) for ks in k64_per_seed]
        longest = max((len(k) for k in k64_per_seed), default=0)
        for start in range(0, longest, self.chunk):
            part = [[ks[j] for j in order[start : start + self.chunk]] for ks, order in zip(k64_per_seed, orders)]
            pid, pm = self._pad([[self._ids[k] for k in ks] for ks in part])
            logp = np.asarray(self._score(self.params, pid, pm, jnp.asarray(self.temperatures)))
            for i, ks in enumerate(part):
                out[i].append(logp[i, : len(ks)])
        a = len(self.action_strings)
        rows = [np.concatenate(o) if o else np.zeros((0, a), np.float32) for o in out]
        return [r[np.argsort(order)] for r, order in zip(rows, orders)]

    def _by_length(self, keys: list[int]) -> np.ndarray:
        """The order of ``keys`` by prompt length: chunks of similar lengths pad little."""
        return np.argsort([len(self._ids[k]) for k in keys], kind="stable")

    def _store(self, todo: list[list[int]]) -> None:
        """Score the situations ``todo[i]`` into seed ``i``'s cache. Seeds still at version 0
        have the reference's weights exactly, so their situations are scored once for all of them
        (a ``one_way`` run scores each situation once, whatever the number of seeds)."""
        fresh = [i for i, ks in enumerate(todo) if ks and self.versions[i] == 0]
        for temp, group in self._by_temperature(fresh):
            rows = self._reference_rows(list(dict.fromkeys(k for i in group for k in todo[i])), temp)
            for i in group:
                for k in todo[i]:
                    self.ref_logp[i].setdefault(k, rows[k])
                    self.caches[i][k] = np.exp(rows[k]).astype(np.float32)
        rest = [[] if i in fresh else ks for i, ks in enumerate(todo)]
        if any(rest):
            for i, (ks, logp) in enumerate(zip(rest, self._log_probs(rest))):
                for k, row in zip(ks, logp):
                    self.caches[i][k] = np.exp(row).astype(np.float32)

    def score(self, requests: list) -> list:
        """Per seed a ``ScoreRequest`` (or ``None``) -> ``HintRows`` (or ``None``)."""
        from bidijax.envs.text import prompt

        requests = [None if r is None else ScoreRequest(*r) for r in requests]
        todo = [[] for _ in self.seeds]
        for i, req in enumerate(requests):
            if req is None:
                continue
            keys, missions, percepts = req.keys, req.missions, req.percepts
            k64 = key64(keys).tolist()
            new = list({k: j for j, k in enumerate(k64) if k not in self.caches[i]}.items())
            if new:
                idx = np.asarray([j for _, j in new])
                texts = prompt(np.asarray(missions)[idx].reshape(len(idx), -1), jax.tree.map(lambda x: np.asarray(x)[idx], percepts))
                for (k, _), text in zip(new, texts):
                    self.prompts[i][k] = text
                self._token_ids([k for k, _ in new], texts)
                todo[i] = [k for k, _ in new]
        if any(todo):
            self._store(todo)
        out = []
        for i, req in enumerate(requests):
            if req is None:
                out.append(None)
                continue
            keys = np.asarray(req.keys).astype(np.uint32).reshape(-1, 2)
            rows = [self.caches[i][k] for k in key64(keys).tolist()]
            probs = np.stack(rows) if rows else np.zeros((0, len(self.action_strings)), np.float32)
            out.append(HintRows(keys, probs.astype(np.float32)))
        return out

    def rescore(self, keys_per_seed: list) -> list:
        """Per seed: ``HintRows`` for the situations already known (others left out), current weights."""
        todo, known = [], []
        for i, keys in enumerate(keys_per_seed):
            keys = np.asarray(keys).astype(np.uint32).reshape(-1, 2)
            k64 = key64(keys).tolist()
            mine = [j for j, k in enumerate(k64) if k in self.prompts[i]]
            known.append((keys[mine], [k64[j] for j in mine]))
            todo.append(list(dict.fromkeys(k for k in known[-1][1] if k not in self.caches[i])))
        if any(todo):
            self._store(todo)
        a = len(self.action_strings)
        return [
            HintRows(keys, np.stack([self.caches[i][k] for k in k64]).astype(np.float32) if k64 else np.zeros((0, a), np.float32))
            for i, (keys, k64) in enumerate(known)
        ]

    # -- fine-tuning -----------------------------------------------------------------------------

    def _by_temperature(self, seeds: list[int]) -> list[tuple[float, list[int]]]:
        """``seeds`` grouped by temperature (seeds that share one share reference scores)."""
        temps = dict.fromkeys(float(self.temperatures[i]) for i in seeds)
        return [(t, [i for i in seeds if float(self.temperatures[i]) == t]) for t in temps]

    def _reference_rows(self, keys: list[int], temperature: float) -> dict:
        """The frozen reference's log-probs of situations at a temperature (the reference is shared)."""
        rows, temp = {}, jnp.float32(temperature)
        keys = [keys[j] for j in self._by_length(keys)]
        for start in range(0, len(keys), self.chunk):
            ks = keys[start : start + self.chunk]
            pid, pm = self._pad([[self._ids[k] for k in ks]])
            for k, row in zip(ks, np.asarray(self._score_one(self.reference, pid[0], pm[0], temp))):
                rows[k] = row.astype(np.float32)
        return rows

    def _fill_reference(self, k64_per_seed: list[list[int]]) -> None:
        """Each seed's cache of reference log-probs, for the given situations; each situation
        missing from some seed's cache is computed once per temperature."""
        for temp, group in self._by_temperature(list(range(len(self.seeds)))):
            todo = list(dict.fromkeys(k for i in group for k in k64_per_seed[i] if k not in self.ref_logp[i]))
            rows = self._reference_rows(todo, temp)
            for i in group:
                for k in k64_per_seed[i]:
                    if k not in self.ref_logp[i]:
                        self.ref_logp[i][k] = rows[k]

    def update(self, items: list) -> list[dict]:
        """Per seed ``(feedback, keys)`` (or ``None``: no update) -> statistics, as ``HFTeacher.update``.

        Each seed's situations are drawn from its own generator exactly as ``HFTeacher.update``
        draws them; a step runs every learning seed at once (the others are left as they are).
        """
        fc, a, s = self.finetune, len(self.action_strings), len(self.seeds)
        nan = float("nan")
        stats = [dict(loss=nan, pg_loss=nan, kl=nan, num_situations=0, steps=0, examples_per_s=0.0) for _ in self.seeds]
        plans = [None] * s
        for i, item in enumerate(items):
            if item is None:
                continue
            feedback, keys = item
            k64, probs, weight = finetune.plan(feedback, np.asarray(keys).astype(np.uint32).reshape(-1, 2), self.prompts[i], fc)
            stats[i]["num_situations"] = 0 if probs is None else int(np.sum(probs > 0))
            if probs is None or not weight.any():
                continue
            draws = draw(probs, fc.steps * fc.batch_size, self.generators[i])
            plans[i] = (k64, weight, draws.view(fc.steps, fc.batch_size).numpy())
        active = np.asarray([p is not None for p in plans])
        if not active.any():
            return stats
        start = time.perf_counter()
        # each step's distinct draws per seed, and the reference rows they need, up front
        steps = [[None if p is None else np.unique(p[2][t], return_counts=True) for p in plans] for t in range(fc.steps)]
        self._fill_reference([[] if p is None else [p[0][r] for t in range(fc.steps) for r in steps[t][i][0]]
                              for i, p in enumerate(plans)])  # fmt: skip
        history, computed = [[] for _ in self.seeds], 0
        for drawn in steps:
            width = _bucket(max(len(d[0]) for d in drawn if d is not None), ROW_BUCKET)
            seqs = [[] for _ in self.seeds]
            ref, w, share = (np.zeros((s, width, n), np.float32) for n in (a, a, 1))
            for i, plan in enumerate(plans):
                if plan is None:
                    continue
                k64, weight, _ = plan
                rows, times = drawn[i]
                computed += len(rows)
                ks = [k64[r] for r in rows]
                seqs[i] = [self._ids[k] for k in ks]
                ref[i, : len(rows)] = np.stack([self.ref_logp[i][k] for k in ks])
                w[i, : len(rows)] = weight[rows]
                share[i, : len(rows), 0] = times / fc.batch_size
            pid, pm = self._pad(seqs)
            self.params, self.opt_state, losses = self._step(
                self.params, self.opt_state, pid, pm, jnp.asarray(ref), jnp.asarray(w), jnp.asarray(share), jnp.asarray(active),
                jnp.asarray(self.temperatures), *self._lanes,
            )  # fmt: skip
            losses = np.asarray(losses)
            for i in np.flatnonzero(active):
                history[i].append(losses[i])
        seconds = time.perf_counter() - start
        for i in np.flatnonzero(active):
            loss, pg, kl = np.mean(history[i], axis=0)
            stats[i].update(loss=float(loss), pg_loss=float(pg), kl=float(kl), steps=fc.steps)
            stats[i]["examples_per_s"] = computed / max(seconds, 1e-9)
            self.trained[i] = True
            self.versions[i] += 1
            self.caches[i].clear()
        return stats

    def forget(self, keys: list) -> None:
        """Per seed, drop what is kept about these situations (prompt, cached and reference
        scores; token ids once no seed knows the prompt): rows evicted from bounded hint tables."""
        dropped = set()
        for i, ks in enumerate(keys):
            for k in key64(np.asarray(ks).astype(np.uint32).reshape(-1, 2)).tolist():
                self.caches[i].pop(k, None)
                self.ref_logp[i].pop(k, None)
                self.prompts[i].pop(k, None)
                dropped.add(k)
        for k in dropped:
            if not any(k in p for p in self.prompts):
                self._ids.pop(k, None)

    # -- checkpoints -----------------------------------------------------------------------------

    def save(self, i: int, directory: str) -> None:
        """Seed ``i``'s state: ``model.safetensors`` (Hugging Face weights), ``optimizer.npz``,
        ``state.npz`` (caches, generator) and ``teacher.json`` (version, prompts, configuration)."""
        from safetensors.torch import save_model

        os.makedirs(directory, exist_ok=True)
        path = lambda name: os.path.join(directory, name)
        G.params_to_torch(jax.tree.map(lambda x: x[i], self.params), self.base.model)
        save_model(self.base.model, path("model.safetensors"))
        leaves = jax.tree.leaves(jax.tree.map(lambda x: np.asarray(x[i]), self.opt_state))
        np.savez(path("optimizer.npz"), *leaves)
        ck, cp = _table_of(self.caches[i], len(self.action_strings))
        rk, rp = _table_of(self.ref_logp[i], len(self.action_strings))
        np.savez(path("state.npz"), cache_keys=ck, cache_probs=cp, ref_keys=rk, ref_logp=rp,
                 generator=self.generators[i].get_state().numpy())  # fmt: skip
        meta = {
            "format": 1, "backend": "jax-gpt2", "model": self.base.model_name, "action_strings": list(self.action_strings),
            "temperature": float(self.temperatures[i]), "length_norm": self.length_norm, "score_eos": self.base.score_eos,
            "finetune": dataclasses.asdict(self.lane_finetune[i]), "version": self.versions[i], "trained": self.trained[i],
            "prompts": {str(k): v for k, v in self.prompts[i].items()},
        }  # fmt: skip
        with open(path("teacher.json"), "w") as f:
            json.dump(meta, f)

    def load(self, i: int, directory: str) -> None:
        """Restore seed ``i``'s state written by ``save`` (same model and settings)."""
        from safetensors.torch import load_model

        path = lambda name: os.path.join(directory, name)
        try:
            with open(path("teacher.json")) as f:
                meta = json.load(f)
            if meta.get("backend") != "jax-gpt2" or tuple(meta["action_strings"]) != self.action_strings:
                raise ValueError(f"backend {meta.get('backend')!r}, action strings {meta['action_strings']}")
            load_model(self.base.model, path("model.safetensors"), device="cpu")
            with np.load(path("optimizer.npz")) as z:
                leaves = [z[f"arr_{j}"] for j in range(len(z.files))]
            with np.load(path("state.npz")) as z:
                cache = {int(k): row for k, row in zip(z["cache_keys"], z["cache_probs"])}
                ref = {int(k): row for k, row in zip(z["ref_keys"], z["ref_logp"])}
                self.generators[i].set_state(torch.from_numpy(z["generator"]))
        except Exception as err:  # missing or damaged files, another backend
            raise ValueError(f"cannot load the teacher state in {directory!r}: {type(err).__name__}: {err}") from None
        mine = jax.tree.map(jnp.asarray, G.params_from_torch(self.base.model))
        self.params = jax.tree.map(lambda P, p: P.at[i].set(p), self.params, mine)
        treedef = jax.tree.structure(self.opt_state)
        self.opt_state = jax.tree.map(lambda P, p: P.at[i].set(p), self.opt_state, jax.tree.unflatten(treedef, leaves))
        self.caches[i], self.ref_logp[i] = cache, ref
        self.prompts[i] = {int(k): v for k, v in meta["prompts"].items()}
        self.versions[i], self.trained[i] = int(meta["version"]), bool(meta["trained"])
        self._token_ids(list(self.prompts[i]), list(self.prompts[i].values()))

