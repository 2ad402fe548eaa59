"""``bidijax sweep``: a grid of settings x seeds in as few compiled programs as the grid allows.

A sweep spec (YAML or JSON)::

    base:                 # TrainConfig fields (like a --config file), or the path of one
      preset: default
      arm: ppo
      iterations: 20
    seeds: 8              # seeds per cell (seed ids base.seed .. base.seed + seeds - 1)
    grid:                 # every combination of these lists ...
      ppo.lr: [1.0e-4, 2.5e-4, 1.0e-3]
      arm: [ppo, one_way]
    zip:                  # ... times, optionally, groups of lists that change together
      - {ppo.gamma: [0.95, 0.99], ppo.gae_lambda: [0.9, 0.95]}
    one_program: false    # true: refuse any field that would need a second program
    metric: eval_success  # summary metric (default eval_success), read at the last iteration
    baseline: null        # a cell name: summary gets each cell's probability of improvement over it

Fields that only change numbers (``config.TRACED_FIELDS``: the student's learning rate, clip,
coefficients, gamma, lambda, beta schedule, ...; the teacher's eps, temperature, fine-tuning lr
and kl_coef) vary inside one program: every cell's seeds are lanes of the same vmapped, jitted
program (``TrainConfig.cells``), each lane reading its values from a traced ``Hyper`` pytree and
its own teacher. Any other field (environment, arm, batch shape, network, which teacher, its
structural settings) changes the program: cells are grouped by those values, and each group runs
as a ``bidijax train`` run directory of its own (``DIR/programs/pNN``), one after another.

The sweep directory holds the spec as given (``spec.yaml``) and resolved (``sweep.json``: the
base config and every cell), one tidy ``metrics.csv`` (a row per cell, seed and iteration, a
column per swept field, every column ``train`` writes) and ``summary.csv`` / ``summary.md``
(``bidijax.report``: IQM and mean with 95% stratified bootstrap CIs, one row per cell).
Resuming skips finished programs and continues an interrupted one from its last checkpoint; a
changed spec is refused with the first difference. Everything is checked before the directory
is created. A sweep can span several ``jax.distributed`` processes (``bidijax sweep --coordinator
... --num-processes P --process-id p``): each program's lanes are split over them as a ``train``
run's are, and process 0 writes the sweep directory.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import shutil

from . import config as cfg
from . import rundir

#: grids beyond this many cells are refused up front (a typo like a 10^6-cell grid)
MAX_CELLS = 10_000
SPEC, RESOLVED, METRICS = "spec.yaml", "sweep.json", "metrics.csv"
_KEYS = ("base", "seeds", "grid", "zip", "one_program", "metric", "baseline")
_META_FIELDS = ("num_seeds", "seed", "cells")  # set by the sweep, not by cells


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled program: a run directory name, its config and the sweep cells it runs."""

    name: str
    config: cfg.TrainConfig
    cells: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A planned sweep: the base config, the swept fields, every cell's values, the programs."""

    base: cfg.TrainConfig
    seeds: int
    fields: tuple[str, ...]
    cells: tuple[dict, ...]
    programs: tuple[Program, ...]
    metric: str = "eval_success"
    baseline: str | None = None

    def cell_name(self, i: int) -> str:
        return cell_name(self.fields, self.cells[i])

    def resolved(self) -> dict:
        """What identifies the sweep (saved as ``sweep.json``; a resume must match it)."""
        return {
            "base": cfg.to_dict(self.base), "seeds": self.seeds, "fields": list(self.fields),
            "cells": [dict(c) for c in self.cells], "programs": [[p.name, list(p.cells)] for p in self.programs],
            "metric": self.metric, "baseline": self.baseline,
        }  # fmt: skip


def cell_name(fields, values: dict) -> str:
    """A cell's name: ``field=value`` of every swept field (strings quoted unless plain words)."""
    plain = lambda v: not isinstance(v, str) or v.replace("_", "").replace("-", "").replace(".", "").replace("/", "").isalnum()
    return ", ".join(f"{f}={values[f] if plain(values[f]) else repr(values[f])}" for f in fields)


# ---------------------------------------------------------------------------------------------
# spec -> plan


def load_spec(path: str) -> dict:
    """The spec file as a mapping (YAML or JSON); ``plan`` checks its contents."""
    return cfg.load_file(path)


def _lists(name: str, mapping) -> dict:
    if not isinstance(mapping, dict):
        raise ValueError(f"{name} must be a mapping of field -> list of values, got {type(mapping).__name__}")
    for field, values in mapping.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{name} field {field!r}: {values!r} must be a non-empty list of values")
        if field in _META_FIELDS:
            raise ValueError(f"{name} field {field!r} cannot be swept; seeds come from 'seeds:' (seed ids from base.seed)")
    return mapping


def _get(config, field: str):
    obj = config
    for part in field.split("."):
        obj = getattr(obj, part)
    return obj


def plan(spec: dict) -> Sweep:
    """Check a spec and plan its programs; every error is a one-line ``ValueError``."""
    unknown = sorted(set(spec) - set(_KEYS))
    if unknown:
        raise ValueError(f"unknown sweep spec key {unknown[0]!r}; allowed: {', '.join(_KEYS)}")
    base = spec.get("base") or {}
    if isinstance(base, str):
        base = cfg.load_file(base)
    if not isinstance(base, dict):
        raise ValueError(f"base must be a mapping of config fields or a config file path, got {type(base).__name__}")
    base = {"preset": "default", **base}
    seeds = spec.get("seeds", base.get("num_seeds", cfg.TrainConfig.num_seeds))
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r} must be an integer >= 1")
    grid = _lists("grid", spec.get("grid") or {})
    zips = spec.get("zip") or []
    if not isinstance(zips, list):
        raise ValueError(f"zip must be a list of mappings (groups of lists that change together), got {type(zips).__name__}")
    for g, group in enumerate(zips):
        _lists(f"zip[{g}]", group)
        lengths = {len(v) for v in group.values()}
        if len(lengths) > 1:
            raise ValueError(f"zip[{g}] lists have different lengths {sorted(lengths)}; they change together")
    fields = list(grid) + [f for group in zips for f in group]
    repeated = sorted({f for f in fields if fields.count(f) > 1})
    if repeated:
        raise ValueError(f"field {repeated[0]!r} appears twice in grid/zip")
    if not fields:
        raise ValueError("the grid is empty: give at least one field -> list of values under 'grid:' (or 'zip:')")
    axes = [[{f: v} for v in values] for f, values in grid.items()]
    axes += [[{f: group[f][i] for f in group} for i in range(len(next(iter(group.values()))))] for group in zips]
    count = math.prod(len(a) for a in axes)
    base_config = cfg.resolve(cfg.from_dict(cfg.merge_dicts(base, {"num_seeds": seeds})))
    if count > MAX_CELLS:
        need = count * cfg.memory_estimate(base_config)
        raise ValueError(
            f"the grid has {count:,} cells x {seeds} seeds = {count * seeds:,} runs (~{need / 2**30:,.0f} GiB at the base "
            f"config's size); at most {MAX_CELLS:,} cells per sweep"
        )
    traced = [f for f in fields if f in cfg.TRACED_FIELDS]
    structural = [f for f in fields if f not in cfg.TRACED_FIELDS]
    if spec.get("one_program") and structural:
        raise ValueError(
            f"field {structural[0]!r} changes the compiled program, but one_program is true; fields that vary "
            f"inside one program: {', '.join(cfg.TRACED_FIELDS)}"
        )
    cells, groups = [], {}
    for combo in itertools.product(*axes):
        values = {k: v for part in combo for k, v in part.items()}
        # every value checked and coerced through the config (one line naming a bad one)
        full = cfg.from_dict(cfg.merge_dicts(base, cfg.nested(values)))
        values = {f: _get(full, f) for f in fields}
        cells.append(values)
        key = json.dumps([values[f] for f in structural])
        groups.setdefault(key, []).append(len(cells) - 1)
    programs = []
    for n, ids in enumerate(groups.values()):
        fixed = {f: cells[ids[0]][f] for f in structural}
        config = cfg.from_dict(cfg.merge_dicts(base, cfg.nested(fixed))).replace(
            num_seeds=seeds, cells={f: [cells[i][f] for i in ids] for f in traced}
        )
        programs.append(Program(f"p{n:02d}", cfg.resolve(config), tuple(ids)))
    metric = spec.get("metric", "eval_success")
    sweep = Sweep(base_config, seeds, tuple(fields), tuple(cells), tuple(programs), str(metric), spec.get("baseline"))
    names = [sweep.cell_name(i) for i in range(len(cells))]
    if sweep.baseline is not None and sweep.baseline not in names:
        raise ValueError(f"baseline {sweep.baseline!r} is not a cell; cells: {', '.join(map(repr, names[:5]))}"
                         + (", ..." if len(names) > 5 else ""))  # fmt: skip
    return sweep


# ---------------------------------------------------------------------------------------------
# running


def run(sweep: Sweep, out_dir: str, resume: bool = False, spec_text: str | None = None, progress=None,
        processes=None) -> list[dict]:  # fmt: skip
    """Run (or continue) ``sweep`` in ``out_dir``; returns the summary rows.

    ``progress(program, rows, state)`` is called after every iteration of every program.
    ``processes`` (default: ``multihost.current()``): in a sweep of several ``jax.distributed``
    processes each one calls ``run`` alike; every program's lanes are split over them as in
    ``train``, and only process 0 creates, locks and writes the sweep directory (the others
    return no rows).
    """
    from . import multihost
    from .loop import train

    processes = processes or multihost.current()
    resolved = json.loads(json.dumps(sweep.resolved()))
    error, held, created = None, None, False
    try:
        for program in sweep.programs:
            multihost.check(program.config.num_lanes, processes.count, processes.index)
        if resume:
            path = os.path.join(out_dir, RESOLVED)
            if not os.path.isfile(path):
                raise ValueError(f"{out_dir!r} is not a sweep directory (no {RESOLVED})")
            with open(path) as f:
                saved = json.load(f)
            if isinstance(saved.get("base"), dict):  # fields added to bidijax since: their defaults
                saved["base"] = json.loads(json.dumps(cfg.to_dict(cfg.from_dict(saved["base"]))))
            diff = cfg.first_difference(saved, resolved, "the sweep directory")
            if diff:
                raise ValueError(f"the spec differs from the sweep directory's ({diff}); a sweep directory keeps its spec")
        elif processes.main and os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
            raise ValueError(f"sweep directory {out_dir!r} already exists; use --resume {out_dir} or another --out")
        if processes.main:
            created = not os.path.exists(out_dir)
            try:
                os.makedirs(os.path.join(out_dir, "programs"), exist_ok=True)
            except OSError as err:
                raise ValueError(f"cannot create sweep directory {out_dir!r}: {err.strerror}") from None
            held = rundir.lock(out_dir)
            if not resume:
                rundir.write_atomic(os.path.join(out_dir, RESOLVED), json.dumps(resolved, indent=2))
                if spec_text is not None:
                    rundir.write_atomic(os.path.join(out_dir, SPEC), spec_text)
    except BaseException as err:  # noqa: BLE001 - every process must hear of it before it is raised
        error = err
    if processes.many and not multihost.agree(error is None)[0] and error is None:
        error = ValueError("another process of the sweep failed to start (its own output says why); stopped")
    try:
        if error is not None:
            raise error
        for program in sweep.programs:
            d = os.path.join(out_dir, "programs", program.name)
            if rundir.finished(d, program.config.iterations, program.config.num_lanes):
                continue
            again = rundir.is_run_dir(d) and rundir.latest_checkpoint(d) is not None
            if processes.main and os.path.exists(d) and not again:  # started, killed before its first checkpoint
                shutil.rmtree(d)
            hook = None if progress is None else (lambda rows, state, p=program: progress(p, rows, state))
            train(program.config, d, resume=again, on_iteration=hook, processes=processes)
            if processes.main:
                write_tidy(sweep, out_dir)
        if not processes.main:
            return []
        write_tidy(sweep, out_dir)
        return write_report(sweep, out_dir)
    except BaseException:
        if created and not resume and not any(
            rundir.is_run_dir(os.path.join(out_dir, "programs", p.name)) for p in sweep.programs
        ):
            shutil.rmtree(out_dir, ignore_errors=True)  # nothing of value yet
        raise
    finally:
        if held is not None:
            os.close(held)


def done_units(sweep: Sweep, out_dir: str) -> int:
    """Cell-iterations already done in ``out_dir`` (for a resumed sweep's progress bar)."""
    total = 0
    for p in sweep.programs:
        d = os.path.join(out_dir, "programs", p.name)
        rows = rundir.read_metrics(d) if rundir.is_run_dir(d) else []
        total += len({int(r["iteration"]) for r in rows}) * len(p.cells)
    return total


def write_tidy(sweep: Sweep, out_dir: str) -> str:
    """The sweep's ``metrics.csv``: every program's rows, each with its cell's name and swept values."""
    rows = []
    for p in sweep.programs:
        d = os.path.join(out_dir, "programs", p.name)
        if not rundir.is_run_dir(d):
            continue
        for r in rundir.read_metrics(d):
            cell = p.cells[int(r.get("cell") or 0)]
            rest = {k: v for k, v in r.items() if k != "cell"}
            rows.append({"cell": sweep.cell_name(cell), **{f: sweep.cells[cell][f] for f in sweep.fields}, **rest})
    path = os.path.join(out_dir, METRICS)
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
    w.writeheader()
    w.writerows(rows)
    rundir.write_atomic(path, text.getvalue())
    return path


def write_report(sweep: Sweep, out_dir: str) -> list[dict]:
    """``summary.csv`` / ``summary.md`` of the finished cells (``bidijax.report``)."""
    from . import report

    cells = report.load_runs(out_dir)
    baseline = sweep.baseline if sweep.baseline in [c.name for c in cells] else None
    rows = report.summarize(cells, metric=sweep.metric, baseline=baseline)
    index = {sweep.cell_name(i): i for i in range(len(sweep.cells))}
    for r in rows:  # the swept values as columns
        r.update({f: sweep.cells[index[r["cell"]]][f] for f in sweep.fields})
    report.write_summary(rows, out_dir)
    return rows
