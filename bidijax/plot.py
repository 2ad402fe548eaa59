"""Learning curves of run directories (``bidijax plot``): PNG files drawn with matplotlib.

For each run: success rate and mean return against frames per seed, the mean over seeds and a
95% bootstrap confidence interval over seeds (resampling seeds with replacement), one line per
run labelled by its arm and teacher; and the teacher's agreement with the oracle on the
situations the student visited.
"""

from __future__ import annotations

import os

import numpy as np

from . import rundir

BOOTSTRAP = 2000


def bootstrap_ci(values: np.ndarray, level: float = 0.95, samples: int = BOOTSTRAP, seed: int = 0):
    """Mean over axis 0 (seeds) and its percentile bootstrap interval: ``(mean, low, high)``."""
    values = np.asarray(values, np.float64)
    mean = np.nanmean(values, axis=0)
    if values.shape[0] < 2:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.shape[0], size=(samples, values.shape[0]))
    boot = np.nanmean(values[idx], axis=1)
    alpha = (1.0 - level) / 2
    return mean, np.nanquantile(boot, alpha, axis=0), np.nanquantile(boot, 1 - alpha, axis=0)


def run_curves(run_dir: str) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """``(label, frames [T], {column: values [S, T]})`` of a run's complete iterations."""
    config = rundir.read_config(run_dir)
    rows = rundir.read_metrics(run_dir)
    if not rows:
        raise ValueError(f"run directory {run_dir!r} has no metrics yet")
    seeds = sorted({int(r["seed"]) for r in rows})
    by_it: dict[int, dict[int, dict]] = {}
    for r in rows:
        by_it.setdefault(int(r["iteration"]), {})[int(r["seed"])] = r
    its = sorted(i for i, d in by_it.items() if len(d) == len(seeds))
    frames = np.asarray([float(by_it[i][seeds[0]]["frames"]) for i in its])
    cols = ("success_rate", "mean_return", "teacher_oracle_agreement", "hint_coverage")
    data = {c: np.asarray([[float(by_it[i][s][c] or "nan") for i in its] for s in seeds]) for c in cols}
    teacher = config.get("teacher", {}).get("name", "?") if config.get("arm") != "ppo" else "no teacher"
    label = f"{config.get('arm', '?')} / {os.path.basename(str(teacher).rstrip('/'))} ({len(seeds)} seeds)"
    return label, frames, data


def plot_runs(run_dirs: list[str], out_dir: str | None = None) -> list[str]:
    """Write ``learning_curves.png`` and ``teacher_agreement.png``; returns their paths."""
    curves = [run_curves(d) for d in run_dirs]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = out_dir or run_dirs[0]
    os.makedirs(out_dir, exist_ok=True)
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, col, title in zip(axes, ("success_rate", "mean_return"), ("success rate", "mean return")):
        for label, frames, data in curves:
            mean, lo, hi = bootstrap_ci(data[col])
            (line,) = ax.plot(frames, mean, label=label)
            ax.fill_between(frames, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("frames per seed")
        ax.set_title(f"{title} (mean, 95% bootstrap CI over seeds)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "learning_curves.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, frames, data in curves:
        if np.all(np.isnan(data["teacher_oracle_agreement"])):
            continue
        mean, lo, hi = bootstrap_ci(data["teacher_oracle_agreement"])
        (line,) = ax.plot(frames, mean, label=label)
        ax.fill_between(frames, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("frames per seed")
    ax.set_ylabel("teacher argmax = an oracle action")
    ax.set_title("teacher agreement with the oracle (visited situations)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "teacher_agreement.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
