"""Comparing training runs with the statistics of Agarwal et al. (2021), computed by ``rliable``.

A *cell* is one arm of an experiment: several seeds of one configuration. For a metric read at a
fixed budget (an iteration), each cell has one score per seed; the report gives the interquartile
mean (IQM) and the mean with 95% stratified bootstrap confidence intervals, the probability of
improvement over a baseline cell, performance profiles, and per-seed frames to a threshold and
area under the curve. ``curve_with_ci`` gives the same interval per iteration for plots.

Inputs accepted by ``load_runs``: run directories (``bidijax train``), directories whose immediate
subdirectories are run directories, and sweep directories (a ``metrics.csv`` with a ``cell``
column: one cell per value of ``cell``).

rliable's bootstrap draws its resampling indices from NumPy's *global* random state (its
``random_state`` arguments do not reach them), so every function here seeds that state from its
``seed`` argument for the duration of the call and restores it afterwards: equal seeds give equal
intervals, and callers' global random streams are left as they were.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os

import numpy as np

from . import rundir

#: metrics renamed since older runs: new name -> old name (either name reads either column)
ALIASES = {"behaviour_success": "success_rate", "behaviour_return": "mean_return"}
_INDEX_COLUMNS = ("iteration", "seed", "cell")
CONFIDENCE = 0.95


# ---------------------------------------------------------------------------------------------
# rliable


def _rliable():
    """``(rliable.library, rliable.metrics)``, imported on first use (~1.4 s). rliable 1.2 needs
    ``arch`` 7, which imports only with pandas < 3: pyproject pins ``pandas<3``."""
    from rliable import library, metrics

    return library, metrics


@contextlib.contextmanager
def _global_seed(seed: int):
    """Seed NumPy's global random state (which rliable's bootstrap uses); restore it on exit."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def _iqm_per_column(x: np.ndarray) -> np.ndarray:
    """IQM over runs of ``x[runs, 1, T]`` for each of the T columns (rliable's
    ``aggregate_iqm`` applied column by column, vectorised: the same 25% trimmed mean)."""
    import scipy.stats

    return scipy.stats.trim_mean(x[:, 0, :], proportiontocut=0.25, axis=0)


def _scores_matrix(name: str, scores) -> np.ndarray:
    x = np.asarray(scores, np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError(f"cell {name!r} has no scores")
    if np.isnan(x).any():
        raise ValueError(f"cell {name!r} has NaN scores (seeds without a value at the budget)")
    return x[:, None]  # rliable's layout: [runs, tasks] with one task


# ---------------------------------------------------------------------------------------------
# cells


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


@dataclasses.dataclass
class Cell:
    """Seeds of one configuration: ``iterations`` int[T], ``frames`` int[T] (per seed),
    ``seeds`` int[S]; ``values(metric)`` is float[S, T] with NaN where a value is missing."""

    name: str
    config: dict
    iterations: np.ndarray
    frames: np.ndarray
    seeds: np.ndarray
    columns: dict = dataclasses.field(repr=False, default_factory=dict)  # name -> float[S, T]

    @property
    def metrics(self) -> list[str]:
        return sorted(self.columns)

    def _column(self, metric: str) -> str | None:
        if metric in self.columns:
            return metric
        for new, old in ALIASES.items():
            if metric == new and old in self.columns:
                return old
            if metric == old and new in self.columns:
                return new
        return None

    def has(self, metric: str) -> bool:
        """Whether the metric (or its old/new name) has at least one value."""
        col = self._column(metric)
        return col is not None and not np.all(np.isnan(self.columns[col]))

    def values(self, metric: str) -> np.ndarray:
        col = self._column(metric)
        if col is None:
            raise ValueError(f"cell {self.name!r} has no metric {metric!r} (has: {', '.join(self.metrics)})")
        return self.columns[col].copy()


def _cell_from_rows(name: str, config: dict, rows: list[dict], where: str) -> Cell:
    rows = [r for r in rows if not math.isnan(_number(r.get("seed")))]
    seeds = sorted({int(_number(r["seed"])) for r in rows})
    iterations = sorted({int(r["iteration"]) for r in rows})
    if not rows or "frames" not in rows[0]:
        raise ValueError(f"{where!r}: metrics.csv needs 'iteration', 'seed' and 'frames' columns")
    s_of = {s: i for i, s in enumerate(seeds)}
    t_of = {t: j for j, t in enumerate(iterations)}
    names = [c for c in rows[0] if c not in _INDEX_COLUMNS]
    grid = {c: np.full((len(seeds), len(iterations)), np.nan) for c in names}
    for r in rows:
        s, t = s_of[int(_number(r["seed"]))], t_of[int(r["iteration"])]
        for c in names:
            grid[c][s, t] = _number(r.get(c))
    frames = np.nanmax(np.where(np.isnan(grid["frames"]), -1, grid["frames"]), axis=0).astype(np.int64)
    return Cell(
        name=name,
        config=config,
        iterations=np.asarray(iterations, np.int64),
        frames=frames,
        seeds=np.asarray(seeds, np.int64),
        columns={c: v for c, v in grid.items() if c != "frames"},
    )


def _run_label(config: dict, run_dir: str) -> str:
    arm = config.get("arm")
    if not arm:
        return os.path.basename(os.path.normpath(run_dir))
    if arm == "ppo":
        return "ppo"
    teacher = (config.get("teacher") or {}).get("name", "?")
    return f"{arm}/{os.path.basename(str(teacher).rstrip('/'))}"


def _has_cell_column(path: str) -> bool:
    metrics = os.path.join(path, rundir.METRICS)
    if not os.path.isfile(metrics):
        return False
    with open(metrics, newline="") as f:
        return "cell" in (next(csv.reader(f), None) or [])


def _load_run(path: str) -> tuple[str, Cell]:
    config = rundir.read_config(path)
    rows = rundir.read_metrics(path)
    if not rows:
        raise ValueError(f"run directory {path!r} has no metrics yet")
    return os.path.basename(os.path.normpath(path)), _cell_from_rows(_run_label(config, path), config, rows, path)


def _load_sweep(path: str) -> list[tuple[str, Cell]]:
    """Cells of a sweep directory: rows grouped by ``cell``. A cell's config is the directory's
    ``config.json`` (if any) plus the swept fields: columns constant within every cell that take
    more than one value across cells."""
    base = rundir.read_config(path) if rundir.is_run_dir(path) else {}
    rows = rundir.read_metrics(path)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["cell"], []).append(r)
    if not groups:
        raise ValueError(f"sweep directory {path!r} has no metrics yet")
    candidates = [c for c in rows[0] if c not in (*_INDEX_COLUMNS, "frames")]
    swept = [
        c for c in candidates
        if all(len({r[c] for r in g}) == 1 for g in groups.values()) and len({g[0][c] for g in groups.values()}) > 1
    ]  # fmt: skip
    return [
        (
            os.path.basename(os.path.normpath(path)),
            _cell_from_rows(name, {**base, "cell": name, **{c: g[0][c] for c in swept}}, g, path),
        )
        for name, g in groups.items()
    ]


def load_runs(paths: list[str] | str) -> list[Cell]:
    """Cells of run directories, directories of run directories, and sweep directories.

    In a directory of run directories, runs without metrics yet are skipped. Names are the arm
    and teacher from each run's config (the directory name if the config has no arm), or a
    sweep's ``cell`` values; repeated names get ``[directory]`` appended, then ``#2``, ``#3``, ...
    Cells keep the order of ``paths``.
    """
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise ValueError("no run directories given")
    loaded: list[tuple[str, Cell]] = []
    for path in paths:
        if _has_cell_column(path):
            loaded += _load_sweep(path)
        elif rundir.is_run_dir(path):
            loaded.append(_load_run(path))
        else:
            children = sorted(os.listdir(path)) if os.path.isdir(path) else []
            children = [os.path.join(path, c) for c in children]
            runs = [c for c in children if rundir.is_run_dir(c) or _has_cell_column(c)]
            if not runs:
                raise ValueError(
                    f"{path!r} is not a run directory, a directory of run directories, "
                    "or a sweep directory (metrics.csv with a 'cell' column)"
                )
            found = []
            for c in runs:
                if _has_cell_column(c):
                    found += _load_sweep(c)
                elif rundir.read_metrics(c):
                    found.append(_load_run(c))
            if not found:
                raise ValueError(f"no run directory under {path!r} has metrics yet")
            loaded += found
    names = [cell.name for _, cell in loaded]
    for (where, cell) in loaded:
        if names.count(cell.name) > 1:
            cell.name = f"{cell.name} [{where}]"
    seen: dict[str, int] = {}
    for _, cell in loaded:
        n = seen[cell.name] = seen.get(cell.name, 0) + 1
        if n > 1:
            cell.name = f"{cell.name} #{n}"
    return [cell for _, cell in loaded]


# ---------------------------------------------------------------------------------------------
# per-seed scores


def last_complete_iteration(values: np.ndarray, iterations: np.ndarray) -> int:
    """The last iteration at which every seed has a (non-NaN) value."""
    values = np.asarray(values, np.float64)
    complete = np.flatnonzero(~np.isnan(values).any(axis=0))
    if complete.size == 0:
        raise ValueError("no iteration has a value for every seed")
    return int(np.asarray(iterations)[complete[-1]])


def at_budget(values: np.ndarray, iterations: np.ndarray, at: int | None = None) -> np.ndarray:
    """Each seed's value at iteration ``at``: float[S].

    ``at`` defaults to ``last_complete_iteration``. A seed without a value at ``at`` (metrics
    logged every k iterations) gets its last value at an earlier iteration.
    """
    values = np.asarray(values, np.float64)
    iterations = np.asarray(iterations)
    if at is None:
        at = last_complete_iteration(values, iterations)
    if iterations.size == 0 or at < iterations.min() or at > iterations.max():
        span = f"{iterations.min()}..{iterations.max()}" if iterations.size else "none"
        raise ValueError(f"iteration {at} is outside the logged iterations ({span})")
    upto = values[:, iterations <= at]
    valid = ~np.isnan(upto)
    if not valid.any(axis=1).all():
        missing = np.flatnonzero(~valid.any(axis=1)).tolist()
        raise ValueError(f"no value at or before iteration {at} for seed index(es) {missing}")
    last = upto.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
    return upto[np.arange(upto.shape[0]), last]


def frames_to_threshold(values: np.ndarray, frames: np.ndarray, threshold: float) -> np.ndarray:
    """Per seed, the first ``frames`` at which the metric is >= ``threshold``: float[S];
    ``inf`` for a seed that never reaches it (so medians and sorting stay meaningful)."""
    values = np.asarray(values, np.float64)
    hit = np.nan_to_num(values, nan=-np.inf) >= threshold
    first = np.argmax(hit, axis=1)
    out = np.asarray(frames, np.float64)[first]
    return np.where(hit.any(axis=1), out, np.inf)


def auc(values: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Per seed, the trapezoidal area under the curve over its non-NaN points divided by their
    frame span, i.e. the metric's mean over training: float[S]. One point: its value; none: NaN."""
    values = np.asarray(values, np.float64)
    frames = np.asarray(frames, np.float64)
    out = np.full(values.shape[0], np.nan)
    for s, row in enumerate(values):
        ok = ~np.isnan(row)
        x, y = frames[ok], row[ok]
        if x.size == 1 or (x.size > 1 and x[-1] == x[0]):
            out[s] = y.mean()
        elif x.size > 1:
            out[s] = np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0])
    return out


# ---------------------------------------------------------------------------------------------
# rliable statistics over cells


def interval_estimates(scores: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, dict]:
    """IQM and mean of each cell's per-seed scores with 95% stratified bootstrap CIs (rliable):
    ``{name: {"iqm": (point, lo, hi), "mean": (point, lo, hi)}}``."""
    library, metrics = _rliable()
    data = {name: _scores_matrix(name, x) for name, x in scores.items()}
    out: dict[str, dict] = {name: {} for name in data}
    for stat, func in (("iqm", metrics.aggregate_iqm), ("mean", metrics.aggregate_mean)):
        with _global_seed(seed):
            points, cis = library.get_interval_estimates(
                data, lambda x, f=func: np.atleast_1d(f(x)), reps=reps, confidence_interval_size=CONFIDENCE
            )
        for name in data:
            out[name][stat] = (float(np.ravel(points[name])[0]), float(cis[name][0, 0]), float(cis[name][1, 0]))
    return out


def probability_of_improvement(
    scores: dict[str, np.ndarray], baseline: str, reps: int = 2000, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """P(a seed of the cell scores higher than a seed of ``baseline``; ties count half), with a
    95% bootstrap CI resampling both cells' seeds independently: ``{name: (point, lo, hi)}`` for
    every cell but the baseline."""
    if baseline not in scores:
        raise ValueError(f"unknown baseline cell {baseline!r}; cells are: {', '.join(map(repr, scores))}")
    library, metrics = _rliable()
    base = _scores_matrix(baseline, scores[baseline])
    pairs = {name: (_scores_matrix(name, x), base) for name, x in scores.items() if name != baseline}
    if not pairs:
        return {}
    with _global_seed(seed):
        points, cis = library.get_interval_estimates(
            pairs,
            lambda x, y: np.atleast_1d(metrics.probability_of_improvement(x, y)),
            reps=reps,
            confidence_interval_size=CONFIDENCE,
        )
    return {n: (float(np.ravel(points[n])[0]), float(cis[n][0, 0]), float(cis[n][1, 0])) for n in pairs}


def performance_profile(
    scores: dict[str, np.ndarray], taus, reps: int = 2000, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fraction of seeds scoring strictly above each threshold in ``taus``, with 95% bootstrap
    CIs (rliable's score distribution): ``{name: (profile, lo, hi)}``, arrays of ``len(taus)``."""
    library, _ = _rliable()
    data = {name: _scores_matrix(name, x) for name, x in scores.items()}
    taus = np.asarray(taus, np.float64)
    with _global_seed(seed):
        profiles, cis = library.create_performance_profile(data, taus, reps=reps, confidence_interval_size=CONFIDENCE)
    return {n: (np.asarray(profiles[n], np.float64), cis[n][0], cis[n][1]) for n in data}


def curve_with_ci(
    values: np.ndarray, reps: int = 500, seed: int = 0, stat: str = "iqm"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per iteration, the IQM (or mean: ``stat="mean"``) over seeds with a 95% stratified
    bootstrap CI (rliable): ``(center, lo, hi)``, each float[T].

    At each iteration only the seeds with a value count; an iteration without any is NaN.
    Iterations sharing a set of present seeds are bootstrapped in one rliable call (rliable
    resamples seeds independently per iteration), so a few hundred iterations take well under
    a second.
    """
    if stat not in ("iqm", "mean"):
        raise ValueError(f"stat must be 'iqm' or 'mean', got {stat!r}")
    library, metrics = _rliable()
    values = np.asarray(values, np.float64)
    func = _iqm_per_column if stat == "iqm" else metrics.aggregate_mean
    center, lo, hi = (np.full(values.shape[1], np.nan) for _ in range(3))
    present = ~np.isnan(values)
    patterns: dict[bytes, list[int]] = {}
    for t in range(values.shape[1]):
        if present[:, t].any():
            patterns.setdefault(present[:, t].tobytes(), []).append(t)
    with _global_seed(seed):
        for cols in patterns.values():
            cols = np.asarray(cols)
            sub = values[present[:, cols[0]]][:, cols][:, None, :]  # [runs, 1 task, iterations]
            points, cis = library.get_interval_estimates(
                {"x": sub}, func, reps=reps, confidence_interval_size=CONFIDENCE
            )
            center[cols], lo[cols], hi[cols] = np.ravel(points["x"]), cis["x"][0], cis["x"][1]
    return center, lo, hi


# ---------------------------------------------------------------------------------------------
# summary table


def summarize(
    cells: list[Cell],
    metric: str = "eval_success",
    at: int | None = None,
    baseline: str | None = None,
    threshold: float = 0.9,
    reps: int = 2000,
) -> list[dict]:
    """One row per cell: the metric at the budget (iteration ``at``; default each cell's last
    iteration where every seed has a value) as IQM and mean with 95% CIs; median frames to reach
    ``threshold`` and how many seeds did; mean AUC over seeds; with a ``baseline`` cell, the
    probability of improvement over it. Frames to threshold and AUC use iterations up to the budget.
    """
    if baseline is not None and baseline not in [c.name for c in cells]:
        raise ValueError(f"unknown baseline cell {baseline!r}; cells are: {', '.join(repr(c.name) for c in cells)}")
    scores, rows = {}, []
    for cell in cells:
        v = cell.values(metric)
        try:
            budget = last_complete_iteration(v, cell.iterations) if at is None else at
            scores[cell.name] = at_budget(v, cell.iterations, budget)
        except ValueError as err:
            raise ValueError(f"cell {cell.name!r}, metric {metric!r}: {err}") from None
        upto = cell.iterations <= budget
        ftt = frames_to_threshold(v[:, upto], cell.frames[upto], threshold)
        rows.append(
            dict(
                cell=cell.name,
                metric=metric,
                seeds=int(v.shape[0]),
                iteration=int(budget),
                frames=int(cell.frames[upto][-1]),
                frames_to_threshold=float(np.median(ftt)),
                reached=int(np.isfinite(ftt).sum()),
                threshold=float(threshold),
                auc=float(np.nanmean(auc(v[:, upto], cell.frames[upto]))),
            )
        )
    est = interval_estimates(scores, reps=reps)
    poi = probability_of_improvement(scores, baseline, reps=reps) if baseline is not None else {}
    for row in rows:
        e = est[row["cell"]]
        row.update(
            iqm=e["iqm"][0], iqm_lo=e["iqm"][1], iqm_hi=e["iqm"][2],
            mean=e["mean"][0], mean_lo=e["mean"][1], mean_hi=e["mean"][2],
        )  # fmt: skip
        if baseline is not None:
            p = poi.get(row["cell"], (math.nan, math.nan, math.nan))
            row.update(baseline=baseline, poi=p[0], poi_lo=p[1], poi_hi=p[2])
    return rows


def _ci(x: float, lo: float, hi: float) -> str:
    return "–" if math.isnan(x) else f"{x:.3f} [{lo:.3f}, {hi:.3f}]"


def to_markdown(rows: list[dict]) -> str:
    """The rows of ``summarize`` as a Markdown table (with a note when budgets differ)."""
    if not rows:
        return ""
    r0 = rows[0]
    has_poi = "poi" in r0
    head = ["cell", "seeds", "iteration", "frames", "IQM [95% CI]", "mean [95% CI]",
            f"frames to ≥ {r0['threshold']:g} (median, reached)", "AUC"]  # fmt: skip
    if has_poi:
        head.append(f"P(improvement over {r0['baseline']})")
    lines = [
        f"**{r0['metric']}**: IQM and mean over seeds with 95% stratified bootstrap CIs (rliable).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        ftt = "never" if math.isinf(r["frames_to_threshold"]) else f"{r['frames_to_threshold']:.0f}"
        cols = [
            r["cell"], str(r["seeds"]), str(r["iteration"]), str(r["frames"]),
            _ci(r["iqm"], r["iqm_lo"], r["iqm_hi"]), _ci(r["mean"], r["mean_lo"], r["mean_hi"]),
            f"{ftt} ({r['reached']}/{r['seeds']})", f"{r['auc']:.3f}",
        ]  # fmt: skip
        if has_poi:
            cols.append("baseline" if r["cell"] == r["baseline"] else _ci(r["poi"], r["poi_lo"], r["poi_hi"]))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |")
    if len({r["iteration"] for r in rows}) > 1 or len({r["frames"] for r in rows}) > 1:
        lines += ["", "Note: the cells are compared at different budgets (iteration/frames columns)."]
    return "\n".join(lines) + "\n"


def write_summary(rows: list[dict], out_dir: str) -> list[str]:
    """Write ``summary.csv`` and ``summary.md`` into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    csv_path, md_path = os.path.join(out_dir, "summary.csv"), os.path.join(out_dir, "summary.md")
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    with open(md_path, "w") as f:
        f.write(to_markdown(rows))
    return [csv_path, md_path]
