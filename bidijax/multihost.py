"""Runs past one machine: ``jax.distributed`` processes, each with its own block of lanes.

Lanes (seeds x cells) are independent, so a run of ``L`` lanes on ``P`` processes gives process
``p`` the lanes ``p * L / P .. (p + 1) * L / P - 1`` of ``config.seeds`` (with their seed ids, so
their numbers are those of the one-process run). Each process runs its own student program, its
own teachers and hint tables for its lanes (split over its local devices as usual). Every
iteration the metric rows are gathered (``process_allgather`` of one fixed-size numeric array:
JAX's own runtime, gloo on CPU) so that every process holds every row; only process 0 writes
``metrics.csv``, ``config.json`` and prints. A checkpoint holds one ``process-<p>/`` part per
process, published by process 0 after a barrier (``rundir.save_checkpoint``).

This module holds the process/lane arithmetic (pure), ``initialize`` and the collectives. A
collective that fails (another process died: its sockets closed) raises ``ProcessLost``, one
line; ``bidijax train`` then exits at once (``leave``) instead of waiting in JAX's shutdown
barrier for a process that will not come.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Processes:
    """This process's place in a run: ``index`` of ``count`` processes."""

    index: int = 0
    count: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes the run directory (config, metrics, the published checkpoint)."""
        return self.index == 0

    @property
    def many(self) -> bool:
        return self.count > 1


SINGLE = Processes()


class ProcessLost(RuntimeError):
    """A collective of a several-process run failed: another process stopped or cannot be reached."""


def _collective(what: str, call):
    """``call()``; a failure becomes one-line ``ProcessLost``."""
    try:
        return call()
    except Exception as err:  # noqa: BLE001 - gloo and the coordination service raise several kinds
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ProcessLost(
            f"another process of the run stopped or cannot be reached ({what}: {first}); this one stopped too. "
            "The last published checkpoint is intact: continue with --resume and the same processes"
        ) from err


def leave(code: int) -> None:
    """End this process now with ``code`` (output flushed), skipping ``jax.distributed``'s
    shutdown barrier, which would wait for a lost process until the heartbeat timeout and abort."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def check(lanes: int, count: int, index: int) -> None:
    """One-line ``ValueError`` for a process count or index that cannot split ``lanes`` lanes."""
    if count < 1:
        raise ValueError(f"num_processes={count} must be >= 1")
    if not 0 <= index < count:
        raise ValueError(f"process_id={index} must lie in [0, {count}) (num_processes={count})")
    if lanes % count:
        raise ValueError(f"num_processes={count} does not divide the {lanes} lanes (seeds x cells); every process runs as many lanes")


def lane_block(lanes: int, processes: Processes) -> list[int]:
    """The lanes (indices into ``config.seeds``) process ``processes.index`` runs."""
    check(lanes, processes.count, processes.index)
    n = lanes // processes.count
    return list(range(processes.index * n, (processes.index + 1) * n))


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               heartbeat_timeout: int = 100) -> Processes:  # fmt: skip
    """Join (once) the run's ``jax.distributed`` processes; returns this process's place.

    With no arguments JAX detects the cluster (SLURM, Open MPI, Kubernetes, mpi4py); a missing
    ``coordinator`` is read from ``JAX_COORDINATOR_ADDRESS``. CPU collectives go through gloo. Must run before
    any JAX computation. ``heartbeat_timeout`` (seconds): how long JAX's coordination service
    waits for a silent process (a frozen or unreachable machine) before it aborts the others.
    """
    import jax

    if not jax.distributed.is_initialized():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                                   heartbeat_timeout_seconds=int(heartbeat_timeout))  # fmt: skip
    return Processes(jax.process_index(), jax.process_count())


def current() -> Processes:
    """This process's place (``SINGLE`` unless ``jax.distributed`` was initialized)."""
    import jax

    if not jax.distributed.is_initialized():
        return SINGLE
    return Processes(jax.process_index(), jax.process_count())


def allgather(x: np.ndarray) -> np.ndarray:
    """``x`` of every process, stacked on a new leading process axis (every process gets it all).
    Bit-exact for any dtype: the bytes travel as ``uint32`` words (``x`` must hold a multiple of 4 bytes)."""
    from jax.experimental import multihost_utils

    x = np.ascontiguousarray(x)
    words = x.reshape(-1).view(np.uint32)
    out = np.asarray(_collective("all-gather", lambda: multihost_utils.process_allgather(words)))
    return out.view(x.dtype).reshape(out.shape[0], *x.shape)


def barrier(name: str) -> None:
    """Wait until every process reached ``name`` (``sync_global_devices``)."""
    from jax.experimental import multihost_utils

    _collective(f"barrier {name}", lambda: multihost_utils.sync_global_devices(name))


def rows_array(rows: list[dict]) -> tuple[list[str], np.ndarray]:
    """Numeric metric rows as ``(columns, float64[rows, columns])`` (columns of the first row)."""
    columns = list(rows[0])
    return columns, np.asarray([[float(r[k]) for k in columns] for r in rows], np.float64)


def array_rows(columns: list[str], values: np.ndarray, like: dict) -> list[dict]:
    """Rows back from ``rows_array``'s form; a column is ``int`` where ``like`` holds an int."""
    kinds = {k: int if isinstance(like[k], (int, np.integer)) and not isinstance(like[k], bool) else float for k in columns}
    return [{k: kinds[k](v) for k, v in zip(columns, row)} for row in values]


def gather_rows(rows: list[dict]) -> list[dict]:
    """Every process's rows of one iteration, in lane order (process 0's lanes first). Every
    process has the same number of rows with the same columns (the same program on equal blocks)."""
    columns, values = rows_array(rows)
    every = allgather(values)  # [P, rows, columns]
    return array_rows(columns, every.reshape(-1, len(columns)), rows[0])


def agree(ok: bool, value: int = 0) -> tuple[bool, np.ndarray]:
    """Whether every process is ``ok``, and every process's ``value`` (int64[P]): a barrier that
    carries a verdict, so that one process's failure to start stops them all."""
    got = allgather(np.asarray([int(ok), int(value)], np.int64))
    return bool(got[:, 0].all()), got[:, 1]
