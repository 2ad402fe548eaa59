"""The bi-directional loop: a seed-vmapped PPO student and one teacher per seed.

One iteration (``Loop.step``) is one student update:

1. the jitted, seed-vmapped student update reads each seed's hint table and returns metrics,
   feedback ``[K, A]`` (TD errors / advantages per situation and action) and the missed situations;
2. in the ``bidirectional`` and ``teacher_only`` arms each seed's teacher is fine-tuned on its
   seed's feedback (``teacher.update``), then re-scores the ``rescore_budget`` most visited
   situations of its table;
3. the teacher scores the missed situations, and both sets of rows are merged into the table.

Before the first iteration a warm-up rollout of the initial student collects the situations it
meets and the teacher scores them, so iteration 1 already has hints (the warm-up rollout is the
same one the first update replays: the runner state is not advanced by it).

With ``overlap`` (``--overlap``) steps 2-3 run on the previous update's feedback and misses
while the student's update runs (JAX dispatches it asynchronously; torch works meanwhile), so the
teacher's time hides behind the student's and the table an update reads is one teacher turn
staler. Results stay deterministic, and the untaught feedback is part of every checkpoint.

Seeds are independent: seed ``i`` has its own student (one slice of the vmapped program), its
own teacher and its own hint table; a run's seed gives the same numbers whichever seeds run
beside it. ``train`` drives a ``Loop`` with a run directory (``rundir``): config, metrics,
atomic checkpoints, resume.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import config as cfg
from . import hints as hn
from . import loggers, rundir
from .envs import make
from .student import PPOConfig, make_train, vmap_seeds
from .teacher.finetune import most_visited

#: metric columns that measure wall-clock time (they differ between otherwise identical runs)
TIMING_COLUMNS = ("wall_s", "student_s", "teacher_s", "frames_per_s")
_STUDENT_COLUMNS = (
    "frames", "episodes", "success_rate", "mean_return", "mean_length", "hint_coverage",
    "teacher_oracle_agreement", "kl_teacher_student", "policy_loss", "value_loss", "entropy",
    "distill_loss", "approx_kl", "clip_frac", "beta",
)  # fmt: skip


@dataclasses.dataclass
class LoopState:
    """Everything a run needs to continue: the student (device), tables and teachers (host)."""

    iteration: int  # student updates done
    runners: Any  # RunnerState with a leading seed axis
    tables: list  # one HintTable per seed
    teachers: list  # one teacher per seed ([] in the ppo arm)
    pending: Any = None  # ``overlap``: the last update's (feedback, table keys), not yet taught


def pending_of(tables: list, feedback) -> tuple:
    """``(feedback, keys)``: host feedback of an update and each seed's valid table keys then."""
    keys = [np.asarray(t.keys)[: int(np.sum(np.asarray(t.valid)))] for t in tables]
    return feedback, keys


def make_teacher(tc: cfg.TeacherConfig, seed: int):
    """A teacher for one seed: a scripted one, or an ``HFTeacher`` (shipped default, hub id, path)."""
    from . import teacher as T

    if tc.scripted:
        return T.ScriptedTeacher(tc.name, eps=tc.eps if tc.name == "noisy_oracle" else 0.0, seed=seed)
    import torch

    from .teacher.finetune import FinetuneConfig
    from .teacher.hf import HFTeacher

    if tc.torch_threads > 0:
        # small models on a CPU shared with XLA: torch's thread pool costs more than it gives
        torch.set_num_threads(tc.torch_threads)

    finetune = FinetuneConfig(
        lr=tc.lr, steps=tc.steps, batch_size=tc.batch_size, micro_batch_size=tc.micro_batch_size, kl_coef=tc.kl_coef,
        min_count=tc.min_count, signal=tc.signal, lora_rank=tc.lora_rank,
    )  # fmt: skip
    return HFTeacher(
        tc.name, temperature=tc.temperature, length_norm=tc.length_norm, batch_size=tc.score_batch_size,
        seed=seed, finetune=finetune,
    )  # fmt: skip


def stack_tables(tables: list) -> hn.HintTable:
    """One table with a leading seed axis; every seed padded to the largest capacity."""
    cap = max(t.capacity for t in tables)
    padded = [t if t.capacity == cap else hn.merge(hn.empty(cap, t.num_actions), *hn.rows(t)) for t in tables]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *padded)


def _seed_slice(tree, i: int, n: int | None = None):
    """Seed ``i`` of a seed-batched pytree; with ``n``, also the first ``n`` rows of every array."""
    return jax.tree.map(lambda x: x[i] if n is None or np.ndim(x[i]) == 0 else x[i][:n], tree)


@functools.lru_cache(maxsize=8)
def _compiled(env_id: str, ppo: PPOConfig):
    """Environment and jitted student functions, shared by every ``Loop`` with the same settings."""
    env = make(env_id)
    train = make_train(ppo, env)
    init, update = vmap_seeds(train)
    size = ppo.miss_buffer_size

    def warm(runner, table):
        ro = train.collect(runner, table)
        p, mission, best = ro.percepts
        return hn.collect_misses(ro.traj.key, ro.traj.valid & ~ro.traj.hit, mission, p, size, oracle=best)

    return env, init, update, jax.jit(jax.vmap(warm))


class Loop:
    """Compiled student functions, the environment and the teachers of one run."""

    def __init__(self, config: cfg.TrainConfig, teachers: list | None = None):
        self.config = config = cfg.resolve(config)
        self.env, self._init, self._update, self._warm = _compiled(config.env_id, config.ppo)
        self.num_actions = int(self.env.action_space.n)
        if not config.uses_teacher:
            self.teachers = []
        elif teachers is not None:
            self.teachers = list(teachers)
        else:
            self.teachers = [make_teacher(config.teacher, s) for s in config.seeds]

    # -- state ---------------------------------------------------------------------------------

    def init(self) -> LoopState:
        """Fresh students (one per seed id) and empty tables; no warm-up yet."""
        keys = jnp.stack([jax.random.PRNGKey(s) for s in self.config.seeds])
        runners = self._init(keys)
        tables = [hn.empty(self.config.table_capacity, self.num_actions) for _ in self.config.seeds]
        return LoopState(0, runners, tables, self.teachers)

    def warmup(self, state: LoopState) -> tuple[LoopState, dict]:
        """Score the situations of the initial student's first rollout (teacher arms only)."""
        if not self.teachers:
            return state, {}
        misses = jax.device_get(self._warm(state.runners, stack_tables(state.tables)))
        tables, n = self._score_misses(state.tables, misses)
        return dataclasses.replace(state, tables=tables), {"warmup_situations": n}

    def _score_misses(self, tables: list, misses) -> tuple[list, int]:
        out, total = [], 0
        for i, (table, teacher) in enumerate(zip(tables, self.teachers)):
            n = int(misses.count[i])
            total += n
            if n:
                m = _seed_slice(misses, i, n)
                keys, probs = teacher.score(m.keys, m.missions, m.percepts, oracle=m.oracle)
                table = hn.merge(table, keys, probs, grow=True)
            out.append(table)
        return out, total

    # -- one iteration -------------------------------------------------------------------------

    def step(self, state: LoopState) -> tuple[LoopState, list[dict]]:
        """One student update and one teacher turn; returns metric rows (one per seed).

        Synchronous (default): the teachers learn from this update's feedback and score its
        misses before the next update. With ``config.overlap`` the student update is dispatched
        first (JAX runs it asynchronously) and the teachers meanwhile work on the previous
        update's feedback and misses (``state.pending``), so the next update reads a table one
        teacher turn staler; the numbers stay deterministic (no dependence on timing).
        """
        c = self.config
        t0 = time.perf_counter()
        out = self._update(state.runners, stack_tables(state.tables))  # dispatched, not awaited
        if c.overlap:  # the teachers' turn on the previous update, while this one runs
            t1 = time.perf_counter()
            tables, teacher_stats = self._teach(state.tables, state.pending)
            t_teach = time.perf_counter() - t1
        metrics, feedback = jax.device_get(out[1:])
        pending = pending_of(state.tables, feedback) if self.teachers else None
        if not c.overlap:  # the teachers' turn on this update
            t1 = time.perf_counter()
            tables, teacher_stats = self._teach(state.tables, pending)
            t_teach, pending = time.perf_counter() - t1, None
        runners = out[0]  # the student stays on the device
        wall = time.perf_counter() - t0
        misses = feedback.misses
        it = state.iteration + 1
        rows = []
        for i, seed in enumerate(c.seeds):
            row = {"iteration": it, "seed": seed}
            row.update({k: _num(metrics[k][i]) for k in _STUDENT_COLUMNS})
            row.update(frames=int(row["frames"]), episodes=int(row["episodes"]))
            ts = teacher_stats[i]
            row.update(
                table_rows=int(np.sum(np.asarray(tables[i].valid))) if self.teachers else 0,
                misses=int(misses.count[i]) if misses is not None else 0,
                miss_overflow=int(misses.overflow[i]) if misses is not None else 0,
                teacher_version=int(getattr(self.teachers[i], "version", 0)) if self.teachers else 0,
                teacher_loss=_num(ts.get("loss", float("nan"))),
                teacher_kl=_num(ts.get("kl", float("nan"))),
                student_s=wall - t_teach,
                teacher_s=t_teach,
                frames_per_s=c.ppo.frames_per_update * c.num_seeds / max(wall, 1e-9),
            )
            if not self.teachers:
                for k in ("hint_coverage", "teacher_oracle_agreement", "kl_teacher_student", "distill_loss"):
                    row[k] = float("nan")
            rows.append(row)
        return LoopState(it, runners, tables, state.teachers, pending), rows

    def _teach(self, tables: list, pending) -> tuple[list, list[dict]]:
        """The teachers' turn on one update's ``pending_of`` output: fine-tune, re-score, score misses."""
        stats = [{} for _ in self.config.seeds]
        if not self.teachers or pending is None:
            return list(tables), stats
        feedback, table_keys = pending
        tables = list(tables)
        if self.config.teacher_learns:
            sums = feedback.replace(misses=None)
            for i, teacher in enumerate(self.teachers):
                # only this seed's valid rows (the first n): padding never reaches the teacher
                keys = table_keys[i]
                fb = _seed_slice(sums, i, len(keys))
                stats[i] = dict(teacher.update(fb, keys) or {})
                top = most_visited(keys, np.asarray(fb.visits), self.config.teacher.rescore_budget)
                if len(top):
                    tables[i] = hn.merge(tables[i], *teacher.rescore(top), grow=True)
        tables, _ = self._score_misses(tables, feedback.misses)
        return tables, stats


def _num(x) -> float:
    return float(np.asarray(x))


# ---------------------------------------------------------------------------------------------
# a run with a run directory


def default_run_dir(config: cfg.TrainConfig) -> str:
    teacher = "none" if config.arm == "ppo" else os.path.basename(config.teacher.name.rstrip("/")) or "teacher"
    return os.path.join("runs", f"{config.arm}-{teacher}-{time.strftime('%Y%m%d-%H%M%S')}")


def train(
    config: cfg.TrainConfig,
    run_dir: str,
    resume: bool = False,
    on_iteration: Callable[[list[dict], LoopState], None] | None = None,
    teachers: list | None = None,
) -> tuple[LoopState, list[dict]]:
    """Run (or, with ``resume``, continue) a training run in ``run_dir``; returns the final state and all rows.

    Everything that can fail on bad input (config, environment id, teacher model) is checked
    before the run directory is created, so a failed start leaves nothing behind.
    """
    config = cfg.resolve(config)
    if resume:
        saved = cfg.from_dict(rundir.read_config(run_dir))
        if cfg.to_dict(saved) != cfg.to_dict(config):
            changed = _first_difference(cfg.to_dict(saved), cfg.to_dict(config))
            raise ValueError(f"resume with a changed config ({changed}); resume takes the run's own config.json")
    elif os.path.exists(run_dir) and os.listdir(run_dir):
        raise ValueError(f"run directory {run_dir!r} already exists and is not empty; use --resume or another --run-dir")
    loggers.check_loggers(config)
    loop = Loop(config, teachers)
    created = not os.path.exists(run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
        if not resume:
            rundir.write_config(run_dir, cfg.to_dict(loop.config))
        log = rundir.MetricsLog(run_dir)
        state = loop.init()
        ckpt = rundir.latest_checkpoint(run_dir) if resume else None
        if resume:
            rundir.clean_partial(run_dir)
        if ckpt is not None:
            meta, runners, tables = rundir.load_checkpoint(ckpt, state.runners, loop.teachers)
            pending = None
            if config.overlap and loop.teachers:
                like = jax.eval_shape(loop._update, runners, stack_tables(tables))[2]
                pending = rundir.load_pending(os.path.join(ckpt, "pending.npz"), like)
            state = LoopState(int(meta["iteration"]), runners, tables, loop.teachers, pending)
            log.truncate(state.iteration)
        else:
            log.truncate(0)
            state, _ = loop.warmup(state)
    except BaseException:
        if created and not resume:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    sinks = loggers.make_loggers(loop.config, run_dir, cfg.to_dict(loop.config))
    try:
        return _run(loop, state, run_dir, [log, *sinks], on_iteration)
    finally:
        for sink in sinks:
            sink.close()


def _run(loop: Loop, state: LoopState, run_dir: str, sinks: list, on_iteration) -> tuple[LoopState, list[dict]]:
    c = loop.config
    all_rows = rundir.read_metrics(run_dir)
    start = time.perf_counter()
    while state.iteration < c.iterations:
        state, rows = loop.step(state)
        for r in rows:
            r["wall_s"] = time.perf_counter() - start
        for sink in sinks:
            sink.log(rows)
        all_rows.extend(rows)
        if state.iteration % c.checkpoint_every == 0 or state.iteration == c.iterations:
            rundir.save_checkpoint(
                run_dir, state.iteration, state.runners, state.tables, state.teachers, {"seeds": c.seeds}, state.pending
            )
        if on_iteration is not None:
            on_iteration(rows, state)
    return state, all_rows


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            if va != vb:
                return _first_difference(va, vb, f"{prefix}{k}.")
        elif va != vb:
            return f"{prefix}{k}: {va!r} in the run, {vb!r} now"
    return "no difference"
