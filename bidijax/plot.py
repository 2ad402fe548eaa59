"""Learning curves of run directories (``bidijax plot``): PNG files drawn with matplotlib.

Each cell (a run, see ``bidijax.report.load_runs``) is one line: the interquartile mean (IQM)
over seeds at each iteration with a shaded 95% stratified bootstrap confidence interval, both
computed by rliable (``report.curve_with_ci``), against frames per seed. ``learning_curves.png``
shows the student's evaluation (``eval_success``, ``eval_return``; only the iterations that were
evaluated are drawn) or, for runs without evaluations, the behaviour policy's episodes
(``behaviour_success``/``behaviour_return``, ``success_rate``/``mean_return`` in older runs); the
titles name the metric drawn. ``teacher_agreement.png`` shows how often the teacher's preferred
action is an oracle action on the situations the student visited. For a sweep directory,
``sensitivity.png`` shows the final metric against each swept value (``plot_sensitivity``).
"""

from __future__ import annotations

import os

import numpy as np

from . import report

CURVE_REPS = 500  # bootstrap replications per curve (a few hundred iterations: well under a second)
CI_NOTE = "IQM over seeds, 95% stratified bootstrap CI (rliable)"

#: per panel, the metrics to draw in order of preference (first one every cell has)
SUCCESS = ("eval_success", "behaviour_success", "success_rate")
RETURN = ("eval_return", "behaviour_return", "mean_return")
SOURCE = {"eval": "student evaluation", "behaviour": "behaviour policy's training episodes"}


def _title(metric: str) -> str:
    source = SOURCE["eval"] if metric.startswith("eval_") else SOURCE["behaviour"]
    return f"{metric} ({source})"


def _choose(cells: list[report.Cell], candidates: tuple[str, ...]) -> list[str | None]:
    """The metric drawn for each cell: the first candidate all cells have, else each cell's own."""
    for m in candidates:
        if all(c.has(m) for c in cells):
            return [m] * len(cells)
    return [next((m for m in candidates if c.has(m)), None) for c in cells]


def _draw(ax, cell: report.Cell, metric: str, label: str) -> None:
    center, lo, hi = report.curve_with_ci(cell.values(metric), reps=CURVE_REPS)
    ok = ~np.isnan(center)
    x = cell.frames[ok]
    (line,) = ax.plot(x, center[ok], label=label, marker="." if ok.sum() < 40 else None)
    ax.fill_between(x, lo[ok], hi[ok], color=line.get_color(), alpha=0.2)


def plot_runs(run_dirs: list[str], out_dir: str | None = None) -> list[str]:
    """Write ``learning_curves.png`` and ``teacher_agreement.png``; returns their paths.

    ``run_dirs``: anything ``report.load_runs`` accepts (run, parent or sweep directories).
    """
    out_dir = out_dir or run_dirs[0]
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir!r} is an existing file; plot writes learning_curves.png and teacher_agreement.png into a directory")
    cells = report.load_runs(run_dirs)
    envs = {cell.name: cell.config.get("env_id") for cell in cells}
    if len(set(envs.values())) > 1:
        by_env = "; ".join(f"{env}: {', '.join(n for n, e in envs.items() if e == env)}" for env in dict.fromkeys(envs.values()))
        raise ValueError(f"the runs are on different environments ({by_env}); plot each environment's runs apart")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create --out directory {out_dir!r}: {err.strerror}") from None
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, candidates in zip(axes, (SUCCESS, RETURN)):
        chosen = _choose(cells, candidates)
        shared = len(set(chosen)) == 1
        for cell, metric in zip(cells, chosen):
            if metric is None:
                continue
            label = f"{cell.name} ({len(cell.seeds)} seeds)" + ("" if shared else f": {metric}")
            _draw(ax, cell, metric, label)
        drawn = sorted({m for m in chosen if m}, key=chosen.index)
        ax.set_title(f"{'; '.join(map(_title, drawn)) or candidates[0]}\n{CI_NOTE}", fontsize=10)
        ax.set_xlabel("frames per seed")
        ax.grid(alpha=0.3)
    if axes[0].lines:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "learning_curves.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for cell in cells:
        if cell.has("teacher_oracle_agreement"):
            _draw(ax, cell, "teacher_oracle_agreement", f"{cell.name} ({len(cell.seeds)} seeds)")
    ax.set_xlabel("frames per seed")
    ax.set_ylabel("teacher argmax = an oracle action")
    ax.set_title(f"teacher agreement with the oracle (visited situations)\n{CI_NOTE}", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "teacher_agreement.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    if len(run_dirs) == 1 and os.path.isfile(os.path.join(run_dirs[0], "sweep.json")):
        paths.append(plot_sensitivity(run_dirs[0], out_dir, cells=cells))
    return paths


def plot_sensitivity(sweep_dir: str, out_dir: str | None = None, metric: str | None = None, cells=None) -> str:
    """``sensitivity.png`` of a sweep: one panel per swept field, the metric at each cell's last
    complete iteration (IQM over seeds, 95% stratified bootstrap CI) against that field's values,
    one line per combination of the other swept values. Returns the path."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(sweep_dir, "sweep.json")) as f:
        spec = json.load(f)
    fields, values = spec["fields"], spec["cells"]
    cells = {c.name: c for c in (cells or report.load_runs(sweep_dir))}
    metric = metric or spec.get("metric") or "eval_success"
    from .sweep import cell_name

    names = [cell_name(fields, v) for v in values]
    present = [i for i, n in enumerate(names) if n in cells and cells[n].has(metric)]
    scores = {names[i]: report.at_budget(cells[names[i]].values(metric), cells[names[i]].iterations) for i in present}
    est = report.interval_estimates(scores, reps=CURVE_REPS) if scores else {}
    fig, axes = plt.subplots(1, len(fields), figsize=(5.5 * len(fields), 4.2), squeeze=False)
    for ax, field in zip(axes[0], fields):
        xs = list(dict.fromkeys(values[i][field] for i in present))
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        pos = {x: (x if numeric else k) for k, x in enumerate(xs)}
        lines: dict[str, list[int]] = {}
        for i in present:
            rest = cell_name([k for k in fields if k != field], values[i]) or "all cells"
            lines.setdefault(rest, []).append(i)
        for label, ids in lines.items():
            ids = sorted(ids, key=lambda i: pos[values[i][field]])
            x = [pos[values[i][field]] for i in ids]
            iqm = np.array([est[names[i]]["iqm"] for i in ids])
            (line,) = ax.plot(x, iqm[:, 0], marker="o", label=label if len(lines) > 1 else None)
            ax.fill_between(x, iqm[:, 1], iqm[:, 2], color=line.get_color(), alpha=0.2)
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_xlabel(field)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(f"{metric} at the last iteration against each swept value; {CI_NOTE}", fontsize=10)
    fig.tight_layout()
    path = os.path.join(out_dir or sweep_dir, "sensitivity.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

