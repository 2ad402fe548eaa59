"""Optional metric sinks beside ``metrics.csv``: TensorBoard (tensorboardX) and Weights & Biases.

``make_loggers(config, run_dir)`` returns the sinks the config asks for; each has
``log(rows)`` (the metric rows of one iteration, one per seed) and ``close()``. A sink whose
package is missing is a one-line ``ValueError`` raised before the run starts.
"""

from __future__ import annotations

import importlib.util
import math
import os


def _require(module: str, extra: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{what} logging needs the {module} package: pip install 'bidijax[{extra}]'")


def _numeric(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if k in ("iteration", "seed"):
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out[k] = x
    return out


class TensorBoard:
    """Scalars per seed (``seed<i>/<metric>``) against frames per seed."""

    def __init__(self, run_dir: str):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def log(self, rows: list[dict]) -> None:
        for r in rows:
            step = int(float(r["frames"]))
            for k, v in _numeric(r).items():
                self.writer.add_scalar(f"seed{r['seed']}/{k}", v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    """The mean over seeds of every metric, one W&B step per iteration."""

    def __init__(self, run_dir: str, config: dict):
        import wandb

        self.run = wandb.init(project="bidijax", dir=run_dir, config=config, name=os.path.basename(run_dir))

    def log(self, rows: list[dict]) -> None:
        cols: dict[str, list[float]] = {}
        for r in rows:
            for k, v in _numeric(r).items():
                cols.setdefault(k, []).append(v)
        self.run.log({k: sum(v) / len(v) for k, v in cols.items()}, step=int(rows[0]["iteration"]))

    def close(self) -> None:
        self.run.finish()


def check_loggers(config) -> None:
    """Raise before a run starts if a requested sink's package is missing."""
    if config.tensorboard:
        _require("tensorboardX", "tensorboard", "TensorBoard")
    if config.wandb:
        _require("wandb", "wandb", "Weights & Biases")


def make_loggers(config, run_dir: str, config_dict: dict) -> list:
    """The sinks ``config`` asks for, started; a sink that cannot start (W&B without a login, say)
    is one ``ValueError`` line naming it, and the sinks already started are closed."""
    check_loggers(config)
    sinks = []
    wanted = [("--tensorboard", config.tensorboard, lambda: TensorBoard(run_dir)),
              ("--wandb", config.wandb, lambda: WandB(run_dir, config_dict))]  # fmt: skip
    for flag, on, start in wanted:
        if not on:
            continue
        try:
            sinks.append(start())
        except Exception as err:  # noqa: BLE001 - the sink's own error, shown in one line
            for sink in sinks:
                sink.close()
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            hint = " (log in with `wandb login`, or set WANDB_MODE=offline)" if flag == "--wandb" else ""
            raise ValueError(f"{flag}: the logger cannot start: {detail}{hint}") from None
    return sinks
