"""``bidijax`` command line: ``train`` (the main job), ``sweep``, ``report``, ``plot``, ``render`` and ``demo``.

``bidijax train`` exposes every field of ``bidijax.config.TrainConfig`` as a flag
(``--iterations``, ``--ppo.num-envs``, ``--teacher.lr``, ...; ``--env`` and ``--teacher`` are
short for ``--env-id`` and ``--teacher.name``), reads YAML/JSON config files (``--config``)
and continues killed runs (``--resume RUN_DIR``). Bad input gets one line and exit code 2; a run
stopped by a full disk gets one line and exit code 1, by Ctrl-C or SIGTERM one line and exit
code 130 or 143 (``--resume`` continues it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import time

from . import config as cfg

EXIT_BAD_INPUT = 2
EXIT_STOPPED = 1  # a run stopped by its environment (a full disk); --resume continues it


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``bidijax train: ...``) and exit code 2."""

    def error(self, message):
        print(f"{self.prog}: {_one_line(message)}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _one_line(message: str, longest: int = 200) -> str:
    """The first line of ``message``, every word longer than ``longest`` characters (a huge
    argument echoed back) cut to its start and its length."""
    words = (message.splitlines() or [""])[0].split(" ")
    return " ".join(w if len(w) <= longest else f"{w[:40]}...({len(w):,} characters)" for w in words)


def _fail(prog: str, err: Exception) -> int:
    from .rundir import DiskFull

    print(f"bidijax {prog}: {_one_line(str(err)) if str(err) else type(err).__name__}", file=sys.stderr)
    return EXIT_STOPPED if isinstance(err, DiskFull) else EXIT_BAD_INPUT


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit), raised where Ctrl-C's ``KeyboardInterrupt``
    would be so that both stop a run the same way."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM raises ``Terminated`` instead of killing the process at once;
    the previous handler comes back afterwards. A no-op outside the main thread, where Python
    cannot set signal handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(prog: str, directory: str, run_dir: str | None, err: KeyboardInterrupt) -> int:
    """Ctrl-C or SIGTERM: one line saying what was kept and how to continue; exit code 130
    (SIGINT's) or 143 (SIGTERM's). Whatever the interrupt cut (an iteration, a checkpoint, a row)
    is redone by ``--resume``."""
    import os

    from . import rundir

    how, code = ("stopped by SIGTERM", 143) if isinstance(err, Terminated) else ("interrupted", 130)
    if not os.path.isdir(directory):  # interrupted while starting: nothing was created
        print(f"bidijax {prog}: {how} before the run started; nothing was kept", file=sys.stderr)
        return code
    last = rundir.latest_checkpoint(run_dir) if run_dir else None
    kept = f"its last checkpoint is {os.path.basename(last)}; " if last else ""
    print(f"bidijax {prog}: {how}; {kept}continue with --resume {directory}", file=sys.stderr)
    return code


def _lost(prog: str, err: Exception) -> None:
    """Another process of the run died: one line, and exit now (code 1), not after JAX's heartbeat timeout."""
    from . import multihost

    print(f"bidijax {prog}: {err}", file=sys.stderr)
    multihost.leave(EXIT_STOPPED)


# ---------------------------------------------------------------------------------------------
# flags from the config dataclasses


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of the config tree: ``--iterations``, ``--ppo.lr``, ``--teacher.finetune.lr``."""

    def add(prefix: str, obj, group) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                add(f"{prefix}{f.name}.", value, parser.add_argument_group(f"{prefix}{f.name} options"))
                continue
            if prefix == "ppo." and f.name in ("hint_mode", "num_updates"):
                continue  # set by the run (--hint-mode, --iterations)
            flags = [f"--{prefix}{f.name.replace('_', '-')}"]
            if f.name == "env_id":
                flags.append("--env")
            if prefix == "teacher." and f.name == "name":
                flags.append("--teacher")
            kw = dict(dest=f"{prefix}{f.name}", default=argparse.SUPPRESS, metavar=type(value).__name__.upper())
            if isinstance(value, bool):
                kw.update(nargs="?", const="true", metavar="BOOL")
            help_default = f"(default: {value!r})" if prefix != "ppo." else "(default: from --preset)"
            group.add_argument(*flags, help=help_default, **kw)

    add("", cfg.TrainConfig(), parser)


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> cfg.TrainConfig:
    """The run's config: defaults < ``base`` (a run's config.json) < ``--config`` file < flags."""
    flat = {k: v for k, v in vars(args).items() if k not in _NON_CONFIG}
    d = dict(base or {})
    if getattr(args, "config", None):
        d = cfg.merge_dicts(d, cfg.load_file(args.config))
    d = cfg.merge_dicts(d, cfg.nested(flat))
    d.setdefault("preset", "default")
    return cfg.resolve(cfg.from_dict(d))


_NON_CONFIG = {"command", "config", "resume", "run_dir", "quiet", "coordinator", "num_processes", "process_id", "distributed",
               "heartbeat_timeout"}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# train


class Progress:
    """``bidijax train``'s progress: iterations done with an ETA (``progress.Bar``) and a status
    (the last evaluation, behaviour success, agreement, coverage, frames/s)."""

    def __init__(self, config: cfg.TrainConfig, stream=None, quiet: bool = False):
        self.config, self.stream, self.quiet = config, stream, quiet
        self.bar = None
        self.last_eval = "eval -"

    def __call__(self, rows: list[dict], state) -> None:
        from .progress import Bar

        it, c = state.iteration, self.config
        if self.bar is None:
            self.bar = Bar(c.iterations, "bidijax train", done=it - 1, stream=self.stream, quiet=self.quiet)
        mean = lambda k: _nanmean([r.get(k) for r in rows])
        if not math.isnan(mean("eval_success")):
            self.last_eval = f"eval success {mean('eval_success'):.3f} (greedy {mean('eval_greedy_success'):.3f})"
        status = (
            f"| frames/seed {int(rows[0]['frames']):,} | {self.last_eval} | "
            f"behaviour success {mean('behaviour_success'):.3f} | teacher-oracle agreement "
            f"{_fmt(mean('teacher_oracle_agreement'))} | coverage {_fmt(mean('hint_coverage'))} | "
            f"{mean('frames_per_s'):,.0f} frames/s"
        )
        self.bar.update(1, status)
        if it == c.iterations:
            self.bar.close()


def _nanmean(xs) -> float:
    xs = [float(x) for x in xs if x not in ("", None) and not math.isnan(float(x))]
    return sum(xs) / len(xs) if xs else float("nan")


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}"


def summary(rows: list[dict], config: cfg.TrainConfig, wall: float) -> str:
    """A short table per seed: the student's last evaluation (sampled and greedy success,
    return), hint coverage over the last iterations, teacher-oracle agreement start -> end."""
    last_k = max(1, min(5, config.iterations // 5))
    lines = [
        f"{config.arm} arm, teacher {config.teacher.name if config.uses_teacher else '-'}, {config.env_id}, "
        f"{config.num_seeds} seed(s), {config.iterations} iterations, wall time {wall:.0f} s",
        f"{'seed':>5} {'frames':>9} {'eval success':>13} {'greedy':>7} {'eval return':>12} {'coverage':>9} "
        f"{'agreement start -> end':>24}",
    ]
    for seed in config.seeds:
        mine = sorted((r for r in rows if int(r["seed"]) == seed), key=lambda r: int(r["iteration"]))
        if not mine:
            continue
        tail = mine[-last_k:]
        evals = [r for r in mine if not math.isnan(_nanmean([r.get("eval_success")]))]
        last = evals[-1] if evals else {}
        agree = f"{_fmt(_nanmean([mine[0]['teacher_oracle_agreement']]))} -> {_fmt(_nanmean([mine[-1]['teacher_oracle_agreement']]))}"
        lines.append(
            f"{seed:>5} {int(float(mine[-1]['frames'])):>9,} {_fmt(_nanmean([last.get('eval_success')])):>13} "
            f"{_fmt(_nanmean([last.get('eval_greedy_success')])):>7} {_fmt(_nanmean([last.get('eval_return')])):>12} "
            f"{_fmt(_nanmean([r['hint_coverage'] for r in tail])):>9} {agree:>24}"
        )
    lines.append(
        f"(eval: the student alone, {config.eval_episodes} episodes per seed at the last evaluation; "
        f"coverage: mean of the last {last_k} iteration(s))"
    )
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    from . import rundir

    try:
        if args.resume:
            if getattr(args, "run_dir", None) not in (None, args.resume):
                raise ValueError("--resume takes the run directory; do not also give --run-dir")
            saved = rundir.read_config(args.resume)
            config = config_from_args(args, base=saved)
            run_dir = args.resume
            last = rundir.latest_checkpoint(run_dir)  # the last iteration's checkpoint and rows (rows
            # before it may have been dropped by experiments/compact_results.py, so not resume_checkpoint)
            if last is not None and rundir.checkpoint_meta(last).get("iteration") == config.iterations \
                    and rundir.finished(run_dir, config.iterations, config.num_lanes):
                print(f"bidijax train: {run_dir} is finished (all {config.iterations} iterations, the last one's rows in its metrics.csv); "
                      "nothing to resume")
                return 0
        else:
            config = config_from_args(args)
            if _distributed(args) and not args.run_dir:
                raise ValueError("several processes need one --run-dir, the same for every process")
            run_dir = args.run_dir or _default_run_dir(config)
        from . import gpu_memory

        gpu_memory.configure(config)  # JAX's share of a GPU it shares with a torch teacher
        processes = _join(args, [config.num_lanes])  # before anything starts JAX's backend
    except ValueError as err:
        return _fail("train", err)
    from . import multihost
    from .loop import train

    say = processes.main  # only process 0 prints (and writes the run directory)
    progress = Progress(config, quiet=args.quiet or not say)
    if say:
        print(f"bidijax train: {'resuming' if args.resume else 'run'} {run_dir}")
    start = time.perf_counter()
    try:
        _, rows = train(config, run_dir, resume=bool(args.resume), on_iteration=progress, processes=processes)
    except ValueError as err:
        return _fail("train", err)
    except multihost.ProcessLost as err:
        _lost("train", err)
    except KeyboardInterrupt as err:
        return _interrupted("train", run_dir, run_dir, err)
    if say:
        print(summary(rows, config, time.perf_counter() - start))
        print(f"run directory: {run_dir}")
    return 0


def _default_run_dir(config: cfg.TrainConfig) -> str:
    from .loop import default_run_dir

    return default_run_dir(config)


def _distributed(args: argparse.Namespace) -> bool:
    return bool(args.distributed or args.coordinator or args.num_processes is not None or args.process_id is not None)


def _join(args: argparse.Namespace, lanes: list[int]):
    """This process's place in the run: joins ``jax.distributed`` when asked to (flags checked
    first against every program's lane count ``lanes``, one-line ``ValueError``), else the one
    process of a one-process run."""
    from . import multihost

    if not _distributed(args):
        return multihost.SINGLE
    if args.heartbeat_timeout < 1:
        raise ValueError(f"--heartbeat-timeout={args.heartbeat_timeout} must be >= 1 second")
    if args.num_processes is not None or args.process_id is not None:
        if args.num_processes is None or args.process_id is None:
            raise ValueError("give --num-processes and --process-id together (or neither: detected by jax.distributed)")
        for n in lanes:
            multihost.check(n, args.num_processes, args.process_id)
    try:
        processes = multihost.initialize(args.coordinator, args.num_processes, args.process_id, args.heartbeat_timeout)
    except (RuntimeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"cannot join the run's processes (jax.distributed.initialize: {first})") from None
    for n in lanes:
        multihost.check(n, processes.count, processes.index)
    return processes


# ---------------------------------------------------------------------------------------------
# sweep


def _sweep(args: argparse.Namespace) -> int:
    import os

    from . import sweep as sw
    from .progress import Bar
    from .report import to_markdown

    try:
        spec_path = args.spec or (os.path.join(args.resume, sw.SPEC) if args.resume else None)
        if spec_path is None:
            raise ValueError("give a sweep spec (SWEEP.yaml), or --resume DIR")
        spec = sw.load_spec(spec_path)
        plan = sw.plan(spec)
        with open(spec_path) as f:
            text = f.read()
        if _distributed(args) and not (args.out or args.resume):
            raise ValueError("several processes need one --out, the same for every process")
        out = args.resume or args.out or os.path.join(
            "sweeps", f"{os.path.splitext(os.path.basename(spec_path))[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        processes = _join(args, [p.config.num_lanes for p in plan.programs])
    except (ValueError, OSError) as err:
        return _fail("sweep", err)
    from . import multihost

    say = processes.main
    n_cells, n_programs = len(plan.cells), len(plan.programs)
    total = sum(p.config.iterations * len(p.cells) for p in plan.programs)
    done = sw.done_units(plan, out) if args.resume else 0
    if say:
        print(f"bidijax sweep: {n_cells} cells x {plan.seeds} seeds in {n_programs} program(s) -> {out}")
    bar = Bar(total, "bidijax sweep", done=done, quiet=args.quiet or not say)
    last: dict = {}

    def progress(program, rows, state):
        mean = _nanmean([r.get("eval_success") for r in rows])
        if not math.isnan(mean):
            last[program.name] = mean
        k = plan.programs.index(program) + 1
        ev = f"{last[program.name]:.3f}" if program.name in last else "-"
        bar.update(len(program.cells), f"| program {k}/{n_programs} ({len(program.cells)} cells) | it "
                   f"{state.iteration}/{program.config.iterations} | eval success {ev}")  # fmt: skip

    try:
        rows = sw.run(plan, out, resume=bool(args.resume), spec_text=text, progress=progress, processes=processes)
    except ValueError as err:
        return _fail("sweep", err)
    except multihost.ProcessLost as err:
        bar.close()
        _lost("sweep", err)
    except KeyboardInterrupt as err:
        bar.close()
        return _interrupted("sweep", out, None, err)
    finally:
        bar.close()
    if say:
        print(to_markdown(rows), end="")
        print(f"sweep directory: {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# plot, render, demo


def _plot(args: argparse.Namespace) -> int:
    from .plot import plot_runs

    try:
        paths = plot_runs(args.run_dirs, args.out)
    except ValueError as err:
        return _fail("plot", err)
    for p in paths:
        print(p)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import load_runs, summarize, to_markdown, write_summary

    try:
        cells = load_runs(args.dirs)
        rows = summarize(cells, metric=args.metric, at=args.at, baseline=args.baseline, threshold=args.threshold)
        paths = write_summary(rows, args.out or args.dirs[0])
    except ValueError as err:
        return _fail("report", err)
    print(to_markdown(rows), end="")
    for p in paths:
        print(p)
    return 0


def _render(args: argparse.Namespace) -> int:
    from .render import render_run

    try:
        path = render_run(args.run_dir, args.out, episodes=args.episodes, seed_index=args.seed_index)
    except ValueError as err:
        return _fail("render", err)
    print(path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from .envs import make
    from .rollout import first_episodes, oracle_policy, random_policy

    try:
        env = make(args.env)
    except ValueError as err:
        return _fail("demo", err)
    print(f"{args.env}: {args.num_envs} environments, max_steps={env.max_steps}")
    for name, policy in (("oracle", oracle_policy), ("random", random_policy)):
        run = jax.jit(lambda key, p=policy: first_episodes(env, p, args.num_envs, key))
        start = time.perf_counter()
        out = jax.device_get(run(jax.random.PRNGKey(args.seed)))
        secs = time.perf_counter() - start
        print(
            f"  {name:6s} policy: success rate {np.mean(out['success']):.3f}, "
            f"mean return {np.mean(out['return']):.3f}, mean length {np.mean(out['length']):.1f} "
            f"({secs:.1f} s incl. compile)"
        )
    return 0


def _add_process_flags(parser: argparse.ArgumentParser) -> None:
    mh = parser.add_argument_group("several machines (jax.distributed; each process runs its block of lanes)")
    mh.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, the same for every process")
    mh.add_argument("--num-processes", type=int, metavar="P", help="processes of the run (must divide the lanes)")
    mh.add_argument("--process-id", type=int, metavar="p", help="this process, 0 .. P-1 (process 0 writes the directory)")
    mh.add_argument("--heartbeat-timeout", type=int, default=100, metavar="SECONDS",
                    help="how long a silent process is waited for before the others abort (default: %(default)s)")  # fmt: skip
    mh.add_argument("--distributed", action="store_true",
                    help="join jax.distributed with what it detects (SLURM, JAX_COORDINATOR_ADDRESS, ...)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="bidijax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    tr = sub.add_parser("train", help="train students with teachers (the bi-directional loop)")
    tr.add_argument("--config", help="YAML or JSON config file (flags override it)")
    tr.add_argument("--run-dir", help="run directory to create (default: runs/<arm>-<teacher>-<time>)")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    tr.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_process_flags(tr)
    _add_config_flags(tr)

    sw = sub.add_parser("sweep", help="a grid of settings x seeds: vmapped in one program where only numbers change")
    sw.add_argument("spec", nargs="?", metavar="SWEEP.yaml", help="sweep spec (see bidijax.sweep); optional with --resume")
    sw.add_argument("--out", default=None, help="sweep directory to create (default: sweeps/<spec>-<time>)")
    sw.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR (finished programs are skipped)")
    sw.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_process_flags(sw)

    pl = sub.add_parser("plot", help="learning curves of runs as PNG files")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pl.add_argument("--out", default=None, help="output directory (default: the first run directory)")

    rp = sub.add_parser("report", help="compare runs at a budget: IQM, mean, probability of improvement (rliable)")
    rp.add_argument("dirs", nargs="+", metavar="DIR", help="run directories, directories of runs, or sweep directories")
    rp.add_argument("--metric", default="eval_success", help="metric column (default: %(default)s)")
    rp.add_argument(
        "--at", type=int, default=None, metavar="ITERATION",
        help="budget iteration (default: each cell's last iteration where every seed has a value)",
    )
    rp.add_argument("--baseline", default=None, metavar="CELL", help="cell to compute the probability of improvement over")
    rp.add_argument("--threshold", type=float, default=0.9, help="level for frames-to-threshold (default: %(default)s)")
    rp.add_argument("--out", default=None, help="directory for summary.csv and summary.md (default: the first DIR)")

    rd = sub.add_parser("render", help="GIF of a trained student's episodes with the teacher's hints")
    rd.add_argument("run_dir", metavar="RUN_DIR")
    rd.add_argument("--out", default=None, help="GIF path (default: RUN_DIR/episodes.gif)")
    rd.add_argument("--episodes", type=int, default=3)
    rd.add_argument("--seed-index", type=int, default=0, help="which seed of the run (0-based)")

    demo = sub.add_parser("demo", help="roll out the BFS oracle and a random policy on a batch of environments")
    demo.add_argument("--env", default="BabyAI-GoToRedBallNoDists-v0", help="environment id (default: %(default)s)")
    demo.add_argument("--num-envs", type=int, default=1024, help="number of parallel environments (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)

    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.command == "train":
        with _sigterm_as_interrupt():
            return _train(args)
    if args.command == "sweep":
        with _sigterm_as_interrupt():
            return _sweep(args)
    if args.command == "plot":
        return _plot(args)
    if args.command == "report":
        return _report(args)
    if args.command == "render":
        if args.episodes < 1:
            return _fail("render", ValueError(f"--episodes must be >= 1, got {args.episodes}"))
        return _render(args)
    if args.num_envs < 1:
        return _fail("demo", ValueError(f"--num-envs must be >= 1, got {args.num_envs}"))
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())
