"""The bi-directional loop: a seed-vmapped PPO student and one teacher per seed.

One iteration (``Loop.step``) is one student update, then the teachers' turn:

1. the jitted, seed-vmapped student update reads each seed's hint table and returns metrics,
   feedback ``[K, A]`` (TD errors / advantages per situation and action) and the missed situations;
2. the teachers' turn (``teaching.turn``): in the ``bidirectional`` and ``teacher_only`` arms each
   seed's teacher is fine-tuned on its seed's feedback and re-scores its most visited situations;
   every teacher scores its seed's missed situations, and the rows are merged into the tables;
3. every ``eval_every`` iterations (and at the last) the student network alone is evaluated
   (``student.evaluate``: sampled and greedy, on environment seeds training never uses).

Before the first iteration a warm-up rollout of the initial student collects the situations it
meets and the teacher scores them, so iteration 1 already has hints (the warm-up rollout is the
same one the first update replays: the runner state is not advanced by it).

With ``overlap`` (``--overlap``) the teachers' turn runs on the previous update's feedback while
the student's update runs (JAX dispatches it asynchronously; torch works meanwhile), so the
teacher's time hides behind the student's and the table an update reads is one teacher turn
staler. Results stay deterministic, and the untaught feedback is part of every checkpoint.

Seeds are independent: seed ``i`` has its own student (one slice of the vmapped program), its
own teacher and its own hint table; a run's seed gives the same numbers whichever seeds run
beside it. ``train`` drives a ``Loop`` with a run directory (``rundir``): config, metrics,
atomic checkpoints, resume.

Several devices: the student's lanes (``runners``, the stacked hint tables) and, when there are
fewer lanes than devices, its environments are split over ``config.devices`` local devices on a
``("seed", "env")`` mesh (``student.device_grid``, ``student.shard_runners``), so the jitted,
vmapped functions run SPMD and the student stays sharded from one iteration to the next. Only
metrics, feedback and misses reach the host; only the stacked tables (and evaluation keys) go to
the devices. Sharding changes where lanes run, not their numbers.
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
from . import gpu_memory, loggers, multihost, rundir, teaching
from .envs import make
from .student import (EVAL_COLUMNS, TRACED, PPOConfig, device_grid, eval_key, hyper_of, make_evaluate, make_train,
                      seed_mesh, shard_runners, shard_seeds, vmap_seeds)

#: metric columns that measure wall-clock time (they differ between otherwise identical runs)
TIMING_COLUMNS = ("wall_s", "student_s", "teacher_s", "eval_s", "frames_per_s")
_STUDENT_COLUMNS = (
    "frames", "episodes", "behaviour_success", "behaviour_return", "behaviour_length", "hint_coverage", "acting_coverage",
    "teacher_oracle_agreement", "kl_teacher_student", "policy_loss", "value_loss", "entropy",
    "distill_loss", "approx_kl", "clip_frac", "explained_variance", "beta",
)  # fmt: skip
_COUNTS = ("table_evicted", "teacher_rejected", "teacher_errors")  # per iteration, summed over its phases
_TEACHER_COLUMNS = ("hint_coverage", "acting_coverage", "teacher_oracle_agreement", "kl_teacher_student", "distill_loss")


@dataclasses.dataclass
class LoopState:
    """Everything a run needs to continue: the student (device), tables and teachers (host)."""

    iteration: int  # student updates done
    runners: Any  # RunnerState with a leading seed axis
    tables: list  # one HintTable per seed
    teachers: Any  # the seeds' teachers (``teaching.make_teachers``; empty in the ppo arm)
    books: list = dataclasses.field(default_factory=list)  # per seed: situation key -> oracle actions
    pending: teaching.Pending | None = None  # ``overlap``: the last update's feedback, not yet taught
    carry: list | None = None  # per seed: feedback summed since its teacher last learned (``update_every``)


def _program(ppo: PPOConfig) -> PPOConfig:
    """``ppo`` with its traced fields at their defaults: what the compiled program depends on
    (the values themselves ride in each student's ``RunnerState.hyper``)."""
    return ppo.replace(**{name: getattr(PPOConfig, name) for name in TRACED})


@functools.lru_cache(maxsize=8)
def _compiled(env_id: str, env_overrides: tuple, ppo: PPOConfig, eval_episodes: int):
    """Environment and jitted student functions, shared by every ``Loop`` with the same settings
    (``ppo`` as ``_program`` gives it: traced values do not recompile)."""
    env = make(env_id, **dict(env_overrides))
    train = make_train(ppo, env)
    init, update = vmap_seeds(train)
    size = ppo.miss_buffer_size or ppo.num_envs * ppo.num_steps

    def warm(runner, table):
        ro = train.collect(runner, table)
        p, mission, best = ro.percepts
        return hn.collect_misses(ro.traj.key, ro.traj.valid & ~ro.traj.hit, mission, p, size, oracle=best)

    evaluate = jax.jit(jax.vmap(make_evaluate(ppo, env, eval_episodes)))
    halves = (jax.jit(jax.vmap(train.rollout)), jax.jit(jax.vmap(train.learn)))
    return env, init, update, jax.jit(jax.vmap(warm)), evaluate, halves


class Loop:
    """Compiled student functions, the environment and the teachers of one run."""

    def __init__(self, config: cfg.TrainConfig, teachers=None, lanes: list[int] | None = None):
        self.config = config = cfg.resolve(config)
        # the lanes this loop runs (indices into ``config.seeds``): all, or one process's block
        self.lanes = list(range(config.num_lanes)) if lanes is None else list(lanes)
        self.seeds = [config.seed_of(lane) for lane in self.lanes]
        grid = device_grid(len(self.seeds), config.ppo.num_envs, config.devices, len(jax.local_devices()))
        self.mesh = seed_mesh(*grid) if grid != (1, 1) else None  # None: every lane on the default device
        overrides = tuple(sorted(config.env_overrides.items()))
        self.env, self._init, self._update, self._warm, self._evaluate, (self._rollout, self._learn) = _compiled(
            config.env_id, overrides, _program(config.ppo), config.eval_episodes
        )
        self.num_actions = int(self.env.action_space.n)
        if teachers is None:
            teachers = teaching.make_teachers(config, self.num_actions, self.lanes)
        self.teachers = teachers if hasattr(teachers, "versions") else teaching.PerSeed(teachers)

    # -- state ---------------------------------------------------------------------------------

    def place(self, tree):
        """``tree`` with its leading lane axis split over the loop's devices (unchanged on one
        device; free when it is already placed so)."""
        return tree if self.mesh is None else shard_seeds(tree, self.mesh)

    def place_runners(self, runners):
        """``place`` for the students: their environment states also split along the env axis
        when the mesh has one (fewer lanes than devices)."""
        return runners if self.mesh is None else shard_runners(runners, self.mesh)

    def tables_in(self, tables: list) -> hn.HintTable:
        """The seeds' tables stacked (``teaching.stack_tables``) and placed like the student."""
        return self.place(teaching.stack_tables(tables))

    def hypers(self):
        """Every lane's numeric hyper-parameters (its cell's values): a ``Hyper`` with a leading lane axis."""
        c = self.config
        per_cell = [hyper_of(c.cell_ppo(cell)) for cell in range(c.num_cells)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *[per_cell[lane // c.num_seeds] for lane in self.lanes])

    def init(self) -> LoopState:
        """Fresh students (one per lane: seed id and cell) and empty tables; no warm-up yet."""
        keys = jnp.stack([jax.random.PRNGKey(s) for s in self.seeds])
        runners = self.place_runners(self._init(keys, self.hypers()))  # initialised on one device, then split
        tables = [hn.empty(self.config.table_capacity, self.num_actions) for _ in self.seeds]
        return LoopState(0, runners, tables, self.teachers, [{} for _ in self.seeds])

    @property
    def score_first(self) -> bool:
        """Whether each update's new situations are scored before the student learns from it."""
        return self.config.score_first and bool(self.teachers)

    def warmup(self, state: LoopState) -> tuple[LoopState, dict]:
        """Score the situations of the initial student's first rollout (teacher arms that act
        on hints; with ``score_first`` in ``distill`` mode the first update scores them itself)."""
        c = self.config
        if not self.teachers or (c.score_first and c.ppo.hint_mode == "distill"):
            return state, {}
        misses = jax.device_get(self._warm(state.runners, self.tables_in(state.tables)))
        scored = teaching.score_misses(state.tables, state.books, self.teachers, misses, c.table_max_rows, 0, c.teacher_faults)
        return dataclasses.replace(state, tables=scored.tables), {"warmup_situations": scored.situations}

    def evaluate(self, runners, iteration: int) -> dict:
        """The student networks alone (sampled and greedy): ``{column: float[S]}``."""
        keys = jnp.stack([eval_key(s, iteration) for s in self.seeds])
        return jax.device_get(self._evaluate(runners.params, self.place(keys)))

    # -- one iteration -------------------------------------------------------------------------

    def step(self, state: LoopState) -> tuple[LoopState, list[dict]]:
        """One student update, one teachers' turn and (every ``eval_every``) an evaluation;
        returns metric rows (one per seed).

        Synchronous (default): the teachers learn from this update's feedback and score its
        misses before the next update. With ``config.overlap`` the student update is dispatched
        first (JAX runs it asynchronously) and the teachers meanwhile work on the previous
        update's feedback and misses (``state.pending``), so the next update reads a table one
        teacher turn staler; the numbers stay deterministic (no dependence on timing).
        """
        c = self.config
        it = state.iteration + 1
        t0 = time.perf_counter()
        tables, t_teach, carry = state.tables, 0.0, state.carry
        first = dict(table_evicted=np.zeros(len(self.seeds), int), teacher_rejected=np.zeros(len(self.seeds), int), teacher_errors=0)
        if self.score_first:  # rollout, then its new situations scored, then the epochs
            ro, misses = self._rollout(state.runners, self.tables_in(tables))  # dispatched
        else:
            learned = tables
            out = self._update(state.runners, self.tables_in(tables))  # dispatched, not awaited
        turn = functools.partial(teaching.turn, c, books=state.books, teachers=self.teachers)
        if c.overlap:  # the teachers' turn on the previous update, while this one runs
            t1 = time.perf_counter()
            tables, teacher_stats, carry = turn(tables=tables, pending=state.pending, carry=carry)
            t_teach += time.perf_counter() - t1
        if self.score_first:
            misses_first = jax.device_get(misses)  # waits for the rollout: the student's time
            t1 = time.perf_counter()
            got = teaching.score_misses(tables, state.books, self.teachers, misses_first, c.table_max_rows, it, c.teacher_faults)
            tables = got.tables
            first.update(table_evicted=got.evicted, teacher_rejected=got.rejected, teacher_errors=got.errors)
            t_teach += time.perf_counter() - t1
            learned = tables
            out = self._learn(state.runners, ro, self.tables_in(tables))
        metrics, feedback = jax.device_get(out[1:])
        if self.teachers:  # rows this update used are the most recently used
            tables = teaching.touch(tables, learned, feedback.visits, it)
        pending = None
        if self.teachers:
            # feedback rows index the tables the update read (``learned``), not any merged since
            pending = teaching.pending_of(learned, feedback, metrics["explained_variance"], it)
        if not c.overlap:  # the teachers' turn on this update
            t1 = time.perf_counter()
            tables, teacher_stats, carry = turn(tables=tables, pending=pending, carry=carry)
            t_teach, pending = t_teach + time.perf_counter() - t1, None
        runners = out[0]  # the student stays on the device
        t2 = time.perf_counter()
        evaluation = self.evaluate(runners, it) if it % c.eval_every == 0 or it == c.iterations else {}
        t_eval = time.perf_counter() - t2
        wall = time.perf_counter() - t0
        misses = feedback.misses  # what the table still missed when the student learned
        scored = np.zeros(len(self.seeds), int)  # new situations the teachers scored before the epochs
        if self.score_first and not first["teacher_errors"]:
            scored = jax.device_get(misses_first.count)
        rows = []
        for i, seed in enumerate(self.seeds):
            row = {"iteration": it, "seed": seed, **({"cell": self.lanes[i] // c.num_seeds} if c.cells else {})}
            row.update({k: _num(metrics[k][i]) for k in _STUDENT_COLUMNS})
            row.update(frames=int(row["frames"]), episodes=int(row["episodes"]))
            row.update({k: _num(evaluation[k][i]) if evaluation else float("nan") for k in EVAL_COLUMNS})
            row.update(
                table_rows=int(np.sum(np.asarray(tables[i].valid))) if self.teachers else 0,
                scored_first=int(scored[i]),
                misses=int(misses.count[i]) if misses is not None else 0,
                miss_overflow=int(misses.overflow[i]) if misses is not None else 0,
                teacher_version=self.teachers.versions[i] if self.teachers else 0,
                **{k: _num(v) for k, v in teacher_stats[i].items() if k not in _COUNTS},
                # score_first's scoring and the turn's, together
                **{k: int(teacher_stats[i].get(k, 0) + np.broadcast_to(first[k], len(self.seeds))[i]) for k in _COUNTS},
                student_s=wall - t_teach - t_eval,
                teacher_s=t_teach,
                eval_s=t_eval,
                frames_per_s=c.ppo.frames_per_update * len(self.seeds) / max(wall - t_eval, 1e-9),
            )
            if not self.teachers:
                row.update({k: float("nan") for k in _TEACHER_COLUMNS})
            rows.append(row)
        return LoopState(it, runners, tables, state.teachers, state.books, pending, carry), rows


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
    teachers=None,
    processes: multihost.Processes | None = None,
) -> tuple[LoopState, list[dict]]:
    """Run (or, with ``resume``, continue) a training run in ``run_dir``; returns the final state and all rows
    (those of ``metrics.csv``, read back with their numbers typed, earlier iterations of a resumed run included).

    Everything that can fail on bad input (config, environment id, teacher model) is checked
    before the run directory is created, so a failed start leaves nothing behind.

    ``processes`` (default: ``multihost.current()``): in a run of several ``jax.distributed``
    processes each one calls ``train`` with the same config and directory and runs its block of
    lanes (``multihost.lane_block``); the rows returned (and given to ``on_iteration``) are every
    process's; only process 0 creates and locks the directory and writes config and metrics.
    """
    config = cfg.resolve(config)
    gpu_memory.configure(config)  # before JAX's backend starts, if it has not (the CLI did it first)
    processes = processes or multihost.current()
    lanes = multihost.lane_block(config.num_lanes, processes)
    error, held, created, started, sinks = None, None, False, None, []
    try:
        if os.path.exists(run_dir) and not os.path.isdir(run_dir):
            raise ValueError(f"run directory {run_dir!r} is an existing file, not a directory")
        if resume:
            saved = cfg.from_dict(rundir.read_config(run_dir))
            if cfg.to_dict(saved) != cfg.to_dict(config):
                changed = cfg.first_difference(cfg.to_dict(saved), cfg.to_dict(config), "the run")
                raise ValueError(f"resume with a changed config ({changed}); resume takes the run's own config.json")
        elif processes.main and os.path.exists(run_dir) and set(os.listdir(run_dir)) - {rundir.LOCK}:
            raise ValueError(f"run directory {run_dir!r} already exists and is not empty; use --resume or another --run-dir")
        loggers.check_loggers(config)
        loop = Loop(config, teachers, lanes)
        if processes.main:  # the other processes write only their parts of the checkpoints
            created = not os.path.exists(run_dir)
            try:
                os.makedirs(run_dir, exist_ok=True)
                held = rundir.lock(run_dir)  # a second run on the same directory is refused (ValueError)
            except OSError as err:
                raise ValueError(f"cannot create run directory {run_dir!r}: {err.strerror}") from None
            if not resume and set(os.listdir(run_dir)) - {rundir.LOCK}:  # another run started meanwhile
                created = False
                raise ValueError(f"run directory {run_dir!r} already exists and is not empty; use --resume or another --run-dir")
            if not resume:
                rundir.write_config(run_dir, cfg.to_dict(loop.config))
        if processes.main:  # before anything is computed: a sink that cannot start stops the run here
            sinks = loggers.make_loggers(loop.config, run_dir, cfg.to_dict(loop.config))
        started = _start(loop, run_dir, resume, processes)
    except BaseException as err:  # noqa: BLE001 - every process must hear of it (below) before it is raised
        error = err
    if processes.many:  # a barrier with a verdict: one process that failed to start stops them all
        ok, iterations = multihost.agree(error is None, started[1].iteration if error is None else -1)
        if error is None and not ok:
            error = ValueError("another process of the run failed to start (its own output says why); stopped")
        elif error is None and len(set(iterations.tolist())) > 1:
            error = ValueError(f"the processes resumed from different checkpoints (iterations {iterations.tolist()})")
    if error is not None:
        for sink in sinks:
            sink.close()
        if held is not None:
            os.close(held)
        if created and not resume:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise error
    log, state = started
    try:
        try:
            return _run(loop, state, run_dir, [log, *sinks] if log else sinks, on_iteration, processes)
        finally:
            for sink in sinks:
                sink.close()
    finally:
        if held is not None:
            os.close(held)


def _start(loop: Loop, run_dir: str, resume: bool, processes: multihost.Processes):
    """``(metrics log or None, state)``: the loop's state from the last checkpoint, or fresh and warmed up."""
    config = loop.config
    log = rundir.MetricsLog(run_dir) if processes.main else None
    state = loop.init()
    ckpt = rundir.resume_checkpoint(run_dir, config.num_lanes) if resume else None
    if resume and processes.main:
        rundir.clean_partial(run_dir)
    if ckpt is not None:
        try:
            meta, runners = rundir.load_checkpoint(ckpt, state.runners, processes)  # placed as ``state.runners``
            like = None
            if config.overlap and loop.teachers:
                like = jax.eval_shape(loop._update, runners, loop.tables_in(state.tables))[2]
            tables, books, pending, carry = teaching.load(rundir.part_dir(ckpt, processes), loop.teachers, like)
        except rundir.Damaged as err:
            raise rundir.Damaged(f"{err}: checkpoint {ckpt!r} is damaged; remove that directory to resume from the one before") from None
        state = LoopState(int(meta["iteration"]), runners, tables, loop.teachers, books, pending, carry)
        if log:
            log.truncate(state.iteration)
    else:
        if log:
            log.truncate(0)
        state, _ = loop.warmup(state)
    return log, state


def _run(loop: Loop, state: LoopState, run_dir: str, sinks: list, on_iteration,
         processes: multihost.Processes = multihost.SINGLE) -> tuple[LoopState, list[dict]]:  # fmt: skip
    c = loop.config
    start = time.perf_counter()
    while state.iteration < c.iterations:
        state, rows = loop.step(state)
        for r in rows:
            r["wall_s"] = time.perf_counter() - start
        if processes.many:  # every process's rows, in lane order
            rows = multihost.gather_rows(rows)
        for sink in sinks:
            sink.log(rows)
        if state.iteration % c.checkpoint_every == 0 or state.iteration == c.iterations:
            write = functools.partial(teaching.save, tables=state.tables, books=state.books, teachers=state.teachers,
                                      pending=state.pending, carry=state.carry)  # fmt: skip
            rundir.save_checkpoint(run_dir, state.iteration, state.runners, {"seeds": c.seeds}, write, processes)
        if on_iteration is not None:
            on_iteration(rows, state)
    # the rows are read back at the end, not kept: a long run's host memory stays flat
    return state, rundir.read_metrics(run_dir, typed=True)
