"""The host side of the JAX/torch seam: each seed's teacher, hint table and oracle book.

What crosses the seam is numpy: the student's update hands over its feedback (per table row
and action), each seed's table keys at that update and the missed situations (keys, missions,
percepts, the BFS oracle's actions where each was first met); the teachers hand back hint rows
(keys, probabilities) that are merged into the tables. This module owns:

- ``make_teacher``: a seed's teacher (scripted, the shipped LM, a hub id or a local model);
- ``stack_tables``: the seeds' tables as one seed-batched ``HintTable`` for the student;
- ``Pending``: one update's feedback as the teachers will read it (also checkpointed, for
  ``--overlap`` runs whose teachers work one update late);
- ``warmup`` and ``turn``: score the missed situations; in learning arms, fine-tune each
  teacher on its seed's feedback (from ``start_iteration`` on, when the critic explains enough
  variance), re-score the most visited situations and measure how informative the feedback was
  (``feedback_oracle_corr``);
- ``add_feedback``: feedback of several updates summed per situation, for teachers that learn
  every ``finetune.update_every`` updates (the sums carried in between are part of a checkpoint);
- ``save`` / ``load``: tables, oracle books, pending and carried feedback and teachers in a checkpoint;
- teacher faults: rows whose probabilities are not a distribution (NaN, inf, negative, not
  summing to 1) never reach a table (``teacher_rejected`` counts them); a teacher that raises
  stops the run with one line (``teacher_faults="stop"``: the last checkpoint is intact) or is
  skipped for that phase (``"skip"``: ``teacher_errors`` counts it; the situations stay misses).

The oracle book of a seed maps each situation key to the BFS oracle's optimal actions at the
state where the student first met it (a situation is a partial view, so other states behind the
same key may have other optimal actions: the book is one sample per situation).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import config as cfg
from . import hints as hn
from . import rundir
from .envs import constants as C
from .feedback import Feedback
from .teacher.finetune import feedback_oracle_corr, most_visited, targets
from .teacher.models import backend_of
from .teacher.protocol import HintRows, ScoreRequest


class TeacherFault(ValueError):
    """A teacher raised while the run's ``teacher_faults`` is ``stop``."""


def _guarded(faults: str, what: str, call):
    """``call()``; on an exception: ``TeacherFault`` (``stop``) or ``None`` (``skip``)."""
    try:
        return call()
    except Exception as err:  # noqa: BLE001 - any teacher failure is handled alike
        if faults != "skip":
            first = str(err).splitlines()[0] if str(err) else ""
            raise TeacherFault(
                f"the teacher failed while {what} ({type(err).__name__}: {first}); the run stopped "
                "(teacher_faults=stop); its last checkpoint is intact: continue with --resume"
            ) from err
        return None


def checked_rows(keys, probs, num_actions: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows whose probabilities form a distribution over ``num_actions`` (finite, >= 0, summing
    to 1 within 1e-3); returns ``(keys, probs, rejected)``."""
    keys = np.asarray(keys).astype(np.uint32).reshape(-1, 2)
    probs = np.asarray(probs, np.float32).reshape(len(keys), -1)
    if probs.shape[1] != num_actions:
        raise ValueError(f"teacher rows have {probs.shape[1]} actions, the table {num_actions}")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(probs).all(1) & (probs >= 0).all(1) & (np.abs(probs.sum(1) - 1.0) <= 1e-3)
    return keys[ok], probs[ok], int(np.sum(~ok))


@dataclasses.dataclass
class Scored:
    """What ``score_misses`` did: new tables and, per seed, rows evicted and rejected."""

    tables: list
    situations: int  # missed situations sent to the teachers (all seeds)
    evicted: list
    rejected: list
    errors: int = 0  # teacher calls that raised (``teacher_faults="skip"``)


@dataclasses.dataclass
class Pending:
    """One student update's feedback, as the teachers read it (host arrays, seed-batched)."""

    feedback: Any  # Feedback with a leading seed axis (``misses`` included)
    keys: list  # per seed: the valid table keys at that update (row k of the feedback = keys[k])
    explained_variance: np.ndarray  # float[S]: the critic's fit in that update
    update: int  # the update's number (1-based)


class PerSeed:
    """Per-seed ``teacher.protocol.Teacher`` objects (``HFTeacher`` on torch, scripted teachers)
    behind the batched ``Teachers`` interface that ``teacher.batched.GPT2Teachers`` implements
    too: every method takes and returns one entry per seed, ``None`` where a seed has nothing to do."""

    def __init__(self, members: list):
        self.members = list(members)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def versions(self) -> list[int]:
        return [int(getattr(t, "version", 0)) for t in self.members]

    def score(self, requests: list) -> list:
        requests = [None if r is None else ScoreRequest(*r) for r in requests]
        return [None if r is None else t.score(r.keys, r.missions, r.percepts, oracle=r.oracle) for t, r in zip(self.members, requests)]

    def update(self, items: list) -> list[dict]:
        return [{} if item is None else dict(t.update(*item) or {}) for t, item in zip(self.members, items)]

    def rescore(self, keys: list) -> list:
        return [t.rescore(k) for t, k in zip(self.members, keys)]

    def forget(self, keys: list) -> None:
        for t, k in zip(self.members, keys):
            if len(k):
                t.forget(k)

    def save(self, i: int, directory: str) -> None:
        self.members[i].save(directory)

    def __getitem__(self, i: int):
        return self.members[i]

    def load(self, i: int, directory: str) -> None:
        self.members[i].load(directory)


def make_teachers(config: cfg.TrainConfig, num_actions: int = C.NUM_ACTIONS, lanes: list[int] | None = None):
    """The run's teachers, one per lane: ``PerSeed`` (scripted; torch LMs) or ``GPT2Teachers``
    (JAX). Each lane gets its cell's numeric settings (``config.lane_teachers``). ``lanes``: only
    those lanes (indices into the run's seeds: one process's block), all by default."""
    tc = config.teacher
    picked = range(config.num_lanes) if lanes is None else lanes
    every = config.lane_teachers()
    lanes, seeds = [every[j] for j in picked], [config.seed_of(j) for j in picked]
    if not config.uses_teacher:
        return PerSeed([])
    if tc.scripted:
        from .teacher import ScriptedTeacher

        eps = [t.eps if tc.name == "noisy_oracle" else 0.0 for t in lanes]
        return PerSeed([ScriptedTeacher(tc.name, eps=e, seed=s, num_actions=num_actions) for s, e in zip(seeds, eps)])
    import torch

    if tc.torch_threads > 0:
        # small models on a CPU shared with XLA: torch's thread pool costs more than it gives
        torch.set_num_threads(tc.torch_threads)
    common = dict(length_norm=tc.length_norm, action_strings=C.ACTION_STRINGS[:num_actions], score_eos=tc.score_eos)
    if backend_of(tc) == "jax":
        from .teacher.batched import GPT2Teachers

        return GPT2Teachers(
            tc.name, seeds=seeds, chunk=tc.score_batch_size, temperature=[t.temperature for t in lanes],
            finetune=[t.finetune for t in lanes], **common,
        )  # fmt: skip
    from .teacher.hf import HFTeacher

    return PerSeed([
        HFTeacher(tc.name, batch_size=tc.score_batch_size, seed=s, temperature=t.temperature, finetune=t.finetune, **common)
        for s, t in zip(seeds, lanes)
    ])  # fmt: skip


def stack_tables(tables: list) -> hn.HintTable:
    """One table with a leading seed axis; every seed padded to the largest capacity."""
    cap = max(t.capacity for t in tables)
    padded = [t if t.capacity == cap else hn.merge(hn.empty(cap, t.num_actions), *hn.rows(t)) for t in tables]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *padded)


def seed_slice(tree, i: int, n: int | None = None):
    """Seed ``i`` of a seed-batched pytree; with ``n``, also the first ``n`` rows of every array."""
    return jax.tree.map(lambda x: x[i] if n is None or np.ndim(x[i]) == 0 else x[i][:n], tree)


def pending_of(tables: list, feedback, explained_variance, update: int) -> Pending:
    """The ``Pending`` of an update: its host feedback and each seed's valid table keys then."""
    keys = [np.asarray(t.keys)[: int(np.sum(np.asarray(t.valid)))] for t in tables]
    return Pending(feedback, keys, np.asarray(explained_variance, np.float64).reshape(-1), int(update))


def score_misses(tables: list, books: list, teachers, misses, max_rows: int = 0, stamp: int = 0,
                 faults: str = "stop") -> Scored:  # fmt: skip
    """Each seed's teacher scores its seed's missed situations; valid rows merged (stamped
    ``stamp``), oracle books filled. With ``max_rows`` a seed's least recently used rows make
    room first and its teacher and oracle book forget them."""
    requests, total = [], 0
    for i in range(len(tables)):
        n = int(misses.count[i])
        total += n
        m = seed_slice(misses, i, n) if n else None
        requests.append(None if m is None else ScoreRequest(m.keys, m.missions, m.percepts, m.oracle))
        if m is not None and m.oracle is not None:
            for k, best in zip(hn.key64(m.keys).tolist(), np.asarray(m.oracle, bool)):
                books[i].setdefault(k, best)
    none = [None] * len(tables)
    rows = _guarded(faults, "scoring new situations", lambda: teachers.score(requests)) if total else none
    out = Scored([], total, [0] * len(tables), [0] * len(tables), errors=int(rows is None))
    gone = []
    for i, (t, r) in enumerate(zip(tables, rows or none)):
        evicted = np.zeros((0, 2), np.uint32)
        if r is not None:
            r = HintRows(*r)  # a custom teacher may answer with a plain (keys, probs) tuple
            keys, probs, out.rejected[i] = checked_rows(r.keys, r.probs, t.num_actions)
            t, evicted = hn.make_room(t, keys, max_rows)
            t = hn.merge(t, keys, probs, grow=True, stamp=stamp)
            for k in hn.key64(evicted).tolist():
                books[i].pop(k, None)
        out.tables.append(t)
        out.evicted[i] = len(evicted)
        gone.append(evicted)
    if any(len(g) for g in gone):
        teachers.forget(gone)
    return out


def touch(tables: list, learned: list, visits, stamp: int) -> list:
    """Stamp every row an update visited: ``learned`` are the tables it read (``visits[i][k]``
    counts the steps of seed ``i`` in row ``k`` of ``learned[i]``); ``tables`` may have changed since."""
    out = []
    for i, t in enumerate(tables):
        v = np.asarray(visits[i])[: learned[i].capacity] > 0
        out.append(hn.touch(t, np.asarray(learned[i].keys)[v], stamp) if v.any() else t)
    return out


def oracle_of(book: dict, keys, num_actions: int) -> tuple[np.ndarray, np.ndarray]:
    """``(oracle bool[K, A], known bool[K])`` of table keys from a seed's oracle book."""
    k64 = hn.key64(keys).tolist()
    known = np.fromiter((k in book for k in k64), bool, len(k64))
    oracle = np.zeros((len(k64), num_actions), bool)
    for j, k in enumerate(k64):
        if known[j]:
            oracle[j] = book[k]
    return oracle, known & oracle.any(1)


def learns_from(config: cfg.TrainConfig, pending: Pending, i: int) -> bool:
    """Whether seed ``i``'s teacher fine-tunes on ``pending`` (arm, start iteration, critic fit)."""
    f = config.teacher.finetune
    return (
        config.teacher_learns
        and pending.update > f.start_iteration
        and pending.explained_variance[i] >= f.min_explained_variance
    )


def add_feedback(old, new):
    """One ``(feedback, keys)`` item (a seed's ``Feedback`` rows and their table keys) holding the
    sums of ``old`` and ``new``, added row by key: ``new``'s rows in their order, then ``old``'s
    rows whose key ``new`` lacks (situations evicted since). ``old`` may be ``None``."""
    if old is None:
        return new
    (f_old, k_old), (f_new, k_new) = old, new
    k_old, k_new = np.asarray(k_old, np.uint32).reshape(-1, 2), np.asarray(k_new, np.uint32).reshape(-1, 2)
    o64, n64 = hn.key64(k_old), hn.key64(k_new)
    extra = ~np.isin(o64, n64)
    keys = np.concatenate([k_new, k_old[extra]])
    where = {k: j for j, k in enumerate(np.concatenate([n64, o64[extra]]).tolist())}
    rows = np.fromiter((where[k] for k in o64.tolist()), np.int64, len(o64))

    def add(x, y):
        x, y = np.asarray(x), np.asarray(y)
        out = np.zeros((len(keys),) + x.shape[1:], x.dtype)
        out[: len(x)] = x
        out[rows] += y  # keys are unique within a table: no index repeats
        return out

    return jax.tree.map(add, f_new, f_old), keys


def turn(config: cfg.TrainConfig, tables: list, books: list, teachers, pending: Pending | None, carry: list | None = None):
    """The teachers' turn on one update: fine-tune and re-score (learning arms), score misses.

    Every seed's teacher works in one batched call per phase (``GPT2Teachers``) or one after the
    other (``PerSeed``). ``carry``: per seed, the feedback summed since its teacher last learned
    (``finetune.update_every > 1``; ``None``: nothing carried). Returns ``(tables, stats,
    carry)``: the new tables, one dict of statistics per seed (``teacher_loss``, ``teacher_kl``,
    ``teacher_learned``, ``feedback_oracle_corr``, ``table_evicted``, ``teacher_rejected``,
    ``teacher_errors``) and the feedback still to learn from (``None`` when there is none).
    """
    nan = float("nan")
    stats = [dict(teacher_loss=nan, teacher_kl=nan, teacher_learned=0, feedback_oracle_corr=nan, table_evicted=0,
                  teacher_rejected=0, teacher_errors=0) for _ in tables]  # fmt: skip
    if not len(teachers) or pending is None:
        return list(tables), stats, carry
    t = config.teacher.finetune
    sums = pending.feedback.replace(misses=None)
    carry = list(carry) if carry is not None else [None] * len(tables)
    due = pending.update % t.update_every == 0
    items = []
    for i in range(len(tables)):
        keys = pending.keys[i]  # only this seed's valid rows (the first n): padding never reaches the teacher
        fb = seed_slice(sums, i, len(keys))
        oracle, has = oracle_of(books[i], keys, tables[i].num_actions)
        w = targets(fb, t.signal, t.min_count, baseline=t.baseline, noise_floor=t.noise_floor)
        stats[i]["feedback_oracle_corr"] = feedback_oracle_corr(w, np.asarray(fb.count), oracle, has)
        if learns_from(config, pending, i):
            carry[i] = add_feedback(carry[i], (fb, keys))
        items.append(carry[i] if due else None)
        if due:
            carry[i] = None
    carry = carry if any(c is not None for c in carry) else None
    tables = list(tables)
    faults, learning = config.teacher_faults, any(item is not None for item in items)
    out = _guarded(faults, "learning from feedback", lambda: teachers.update(items)) if learning else None
    if learning and out is None:
        for st in stats:
            st["teacher_errors"] += 1
    if out is not None:
        for i, item in enumerate(items):
            if item is not None:
                stats[i].update(teacher_loss=out[i].get("loss", nan), teacher_kl=out[i].get("kl", nan))
                stats[i]["teacher_learned"] = int(out[i].get("steps", 0) > 0)
        # re-score the most visited situations of the seeds whose teacher changed
        none = np.zeros((0, 2), np.uint32)
        top = [most_visited(item[1], np.asarray(item[0].visits), t.rescore_budget) if stats[i]["teacher_learned"] else none
               for i, item in enumerate(items)]  # fmt: skip
        rescored = _guarded(faults, "re-scoring", lambda: teachers.rescore(top)) if any(len(k) for k in top) else []
        if rescored is None:
            for st in stats:
                st["teacher_errors"] += 1
        for i, rows in enumerate(rescored or []):
            rows = HintRows(*rows)
            keys, probs, rejected = checked_rows(rows.keys, rows.probs, tables[i].num_actions)
            stats[i]["teacher_rejected"] += rejected
            if len(keys):
                tables[i] = hn.merge(tables[i], keys, probs, grow=True, stamp=pending.update)
    scored = score_misses(tables, books, teachers, pending.feedback.misses, config.table_max_rows, pending.update, faults)
    for i, st in enumerate(stats):
        st["table_evicted"] = scored.evicted[i]
        st["teacher_rejected"] += scored.rejected[i]
        st["teacher_errors"] += scored.errors
    return scored.tables, stats, carry


# ---------------------------------------------------------------------------------------------
# checkpoints


def save(directory: str, tables: list, books: list, teachers, pending: Pending | None, carry: list | None = None) -> None:
    """Tables (``tables.npz``), oracle books (``oracle.npz``), pending feedback (``pending.npz``),
    carried feedback (``carry.npz``) and one directory per teacher (``teacher-<i>/``) into a
    checkpoint directory."""
    save_tables(os.path.join(directory, "tables.npz"), tables)
    arrays = {}
    for i, book in enumerate(books):
        keys = sorted(book)
        arrays[f"keys_{i}"] = np.asarray(keys, np.uint64)
        arrays[f"oracle_{i}"] = np.stack([book[k] for k in keys]) if keys else np.zeros((0, 1), bool)
    with open(os.path.join(directory, "oracle.npz"), "wb") as f:
        np.savez(f, **arrays)
    if pending is not None:
        save_pending(os.path.join(directory, "pending.npz"), pending)
    if carry is not None:
        save_carry(os.path.join(directory, "carry.npz"), carry)
    for i in range(len(teachers)):
        d = os.path.join(directory, f"teacher-{i}")
        os.makedirs(d)
        teachers.save(i, d)


def load(directory: str, teachers, feedback_like=None) -> tuple[list, list, Pending | None, list | None]:
    """``(tables, books, pending, carry)`` of a checkpoint written by ``save``; teachers load in place.
    ``feedback_like``: a feedback pytree of the saved structure, to restore pending feedback."""
    tables = load_tables(os.path.join(directory, "tables.npz"))
    books = [{} for _ in tables]
    path = os.path.join(directory, "oracle.npz")
    if os.path.exists(path):
        with rundir.reading(path), np.load(path) as z:
            for i in range(len(tables)):
                books[i] = {int(k): row for k, row in zip(z[f"keys_{i}"], z[f"oracle_{i}"])}
    pending = None
    if feedback_like is not None:
        pending = load_pending(os.path.join(directory, "pending.npz"), feedback_like)
    for i in range(len(teachers)):
        teachers.load(i, os.path.join(directory, f"teacher-{i}"))
    return tables, books, pending, load_carry(os.path.join(directory, "carry.npz"), len(tables))


def save_carry(path: str, carry: list) -> None:
    """Per seed, the carried ``(feedback, keys)`` item (``turn``) or ``None``, into one ``.npz``."""
    arrays = {}
    for i, item in enumerate(carry):
        if item is not None:
            arrays[f"keys_{i}"] = np.asarray(item[1])
            arrays.update({f"{name}_{i}": np.asarray(getattr(item[0], name)) for name in _CARRIED})
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_carry(path: str, lanes: int) -> list | None:
    """The carry saved by ``save_carry`` (``lanes`` entries); ``None`` if the checkpoint has none."""
    if not os.path.exists(path):
        return None
    with rundir.reading(path), np.load(path) as z:
        return [
            (Feedback(**{name: z[f"{name}_{i}"] for name in _CARRIED}), z[f"keys_{i}"]) if f"keys_{i}" in z.files else None
            for i in range(lanes)
        ]


_CARRIED = ("td_sum", "adv_sum", "count", "visits")  # the ``Feedback`` fields a carry holds


def save_pending(path: str, pending: Pending) -> None:
    """A ``Pending`` into one ``.npz`` (feedback leaves in order, keys per seed)."""
    arrays = {f"leaf_{j}": np.asarray(x) for j, x in enumerate(jax.tree.leaves(pending.feedback))}
    arrays.update({f"keys_{i}": np.asarray(k) for i, k in enumerate(pending.keys)})
    arrays.update(explained_variance=pending.explained_variance, update=np.asarray(pending.update))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_pending(path: str, feedback_like) -> Pending | None:
    """The ``Pending`` saved by ``save_pending``; ``None`` if the checkpoint has none.

    ``feedback_like``: any feedback pytree of the same structure (e.g. from ``jax.eval_shape``).
    """
    if not os.path.exists(path):
        return None
    treedef = jax.tree.structure(feedback_like)
    with rundir.reading(path), np.load(path) as z:
        leaves = [z[f"leaf_{j}"] for j in range(treedef.num_leaves)]
        keys = [z[f"keys_{i}"] for i in range(len([k for k in z.files if k.startswith("keys_")]))]
        return Pending(jax.tree.unflatten(treedef, leaves), keys, z["explained_variance"], int(z["update"]))


def save_tables(path: str, tables: list) -> None:
    """Hint tables (one per seed) into one ``.npz``."""
    arrays = {}
    for i, t in enumerate(tables):
        arrays[f"keys_{i}"] = np.asarray(t.keys)
        arrays[f"probs_{i}"] = np.asarray(t.probs)
        arrays[f"valid_{i}"] = np.asarray(t.valid)
        arrays[f"stamp_{i}"] = np.asarray(t.stamp)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_tables(path: str) -> list:
    """The hint tables saved by ``save_tables``."""
    from .hints import HintTable

    with rundir.reading(path), np.load(path) as z:
        n = len([k for k in z.files if k.startswith("keys_")])
        return [
            HintTable(
                keys=jnp.asarray(z[f"keys_{i}"]), probs=jnp.asarray(z[f"probs_{i}"]), valid=jnp.asarray(z[f"valid_{i}"]),
                # checkpoints from before row stamps: every row equally old
                stamp=jnp.asarray(z[f"stamp_{i}"] if f"stamp_{i}" in z.files else np.zeros(len(z[f"valid_{i}"]), np.int32)),
            )
            for i in range(n)
        ]
