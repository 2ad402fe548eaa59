"""The run directory: config, metrics and checkpoints, written so that a kill never corrupts it.

Layout::

    RUN_DIR/config.json                 the full resolved config
    RUN_DIR/metrics.csv                 one row per (iteration, seed)
    RUN_DIR/checkpoints/LATEST          name of the newest complete checkpoint
    RUN_DIR/checkpoints/it-000010/      student (orbax), hint tables (npz), teachers, meta.json

A checkpoint is written into a hidden temporary directory and renamed into place; ``LATEST`` is
replaced atomically afterwards. A kill therefore leaves either the previous checkpoint or the new
one, never half of one; leftovers of an interrupted write are removed on resume. Metric rows after
the checkpoint a run resumes from are dropped (they are computed again, identically).

A run of several processes (``bidijax.multihost``) writes one part per process into the same
checkpoint, ``it-000010/process-<p>/`` (that process's lanes: student ``student.npz``, tables,
teachers), and process 0 publishes it (meta.json, rename, ``LATEST``) once every part is written
(a barrier); every process then loads its own part on resume.
"""

from __future__ import annotations

import csv
import json
import os
import shutil


CONFIG = "config.json"
METRICS = "metrics.csv"
CHECKPOINTS = "checkpoints"
KEEP = 2  # complete checkpoints kept


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a synced temporary file and a rename (never half a file)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


LOCK = ".lock"


def lock(run_dir: str) -> int:
    """Hold ``run_dir`` for this process (an exclusive ``flock`` on ``run_dir/.lock``, released
    when the returned descriptor is closed or the process dies); one-line ``ValueError`` when
    another process holds it."""
    import fcntl

    fd = os.open(os.path.join(run_dir, LOCK), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ValueError(f"run directory {run_dir!r} is in use by another bidijax process") from None
    return fd


def is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG))


def finished(run_dir: str, iterations: int, lanes: int) -> bool:
    """Whether a run directory holds the last iteration's row for every one of its ``lanes``."""
    rows = read_metrics(run_dir) if is_run_dir(run_dir) else []
    return sum(int(r["iteration"]) == iterations for r in rows) == lanes


def write_config(run_dir: str, config: dict) -> None:
    write_atomic(os.path.join(run_dir, CONFIG), json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_config(run_dir: str) -> dict:
    if not is_run_dir(run_dir):
        raise ValueError(f"{run_dir!r} is not a bidijax run directory (no {CONFIG})")
    with open(os.path.join(run_dir, CONFIG)) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# metrics.csv


class MetricsLog:
    """Appends metric rows to ``metrics.csv`` (header from the first row), flushed per write."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, METRICS)
        self.columns: list[str] | None = None
        if os.path.exists(self.path):
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), None)
            self.columns = header or None

    def log(self, rows: list[dict]) -> None:
        if not rows:
            return
        new = self.columns is None
        if new:
            self.columns = list(rows[0])
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerows(rows)
            f.flush()
            os.fsync(f.fileno())

    def truncate(self, iteration: int) -> None:
        """Keep only complete rows of iterations ``<= iteration`` (after a resume)."""
        if not os.path.exists(self.path):
            return
        rows = read_metrics(os.path.dirname(self.path))
        kept = [r for r in rows if int(r["iteration"]) <= iteration]
        if not self.columns:
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writeheader()
            w.writerows(kept)
        os.replace(tmp, self.path)


def read_metrics(run_dir: str) -> list[dict]:
    """Rows of ``metrics.csv`` as dicts of strings; a torn last line (killed mid-write) is skipped."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        out = []
        for row in reader:
            if None in row or any(row.get(c) is None for c in cols):
                continue
            try:
                int(row["iteration"])
            except (KeyError, TypeError, ValueError):
                continue
            out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# checkpoints


def _ckpt_root(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINTS)


def _name(iteration: int) -> str:
    return f"it-{iteration:06d}"


def latest_checkpoint(run_dir: str) -> str | None:
    """Path of the newest complete checkpoint, or None."""
    root = _ckpt_root(run_dir)
    try:
        with open(os.path.join(root, "LATEST")) as f:
            name = f.read().strip()
        path = os.path.join(root, name)
        if os.path.isfile(os.path.join(path, "meta.json")):
            return path
    except OSError:
        pass
    done = sorted(
        d for d in os.listdir(root) if d.startswith("it-") and os.path.isfile(os.path.join(root, d, "meta.json"))
    ) if os.path.isdir(root) else []
    return os.path.join(root, done[-1]) if done else None


def clean_partial(run_dir: str) -> None:
    """Remove temporary directories left by a checkpoint write that was killed."""
    root = _ckpt_root(run_dir)
    if os.path.isdir(root):
        for d in os.listdir(root):
            if d.startswith(".tmp-") or d.endswith(".tmp") or ".tmp-" in d:
                p = os.path.join(root, d)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def part_dir(path: str, processes=None) -> str:
    """Where a process's part of checkpoint ``path`` lives: ``path`` itself in a one-process run,
    ``path/process-<p>`` in a run of several processes."""
    return path if processes is None or not processes.many else os.path.join(path, f"process-{processes.index}")


def save_checkpoint(run_dir: str, iteration: int, runners, meta: dict, write=None, processes=None) -> str:
    """Write one checkpoint atomically (see the module docstring); returns its path.

    ``runners``: the student (orbax), gathered to one device first, so that a checkpoint does not
    depend on how many devices the run was split over (``load_checkpoint`` places it again);
    ``write(directory)``: writes the host side (hint tables, teachers, pending feedback:
    ``bidijax.teaching.save``) into the checkpoint directory. ``processes``
    (``multihost.Processes``): in a run of several processes every one of them calls this with
    its own lanes; each writes its part, process 0 publishes the checkpoint after a barrier.
    """
    import jax

    from . import multihost

    processes = processes or multihost.SINGLE
    root = _ckpt_root(run_dir)
    final = os.path.join(root, _name(iteration))
    tmp = os.path.join(root, f".tmp-{_name(iteration)}")
    if processes.main:
        os.makedirs(root, exist_ok=True)
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
    if processes.many:
        multihost.barrier(f"checkpoint-{iteration}-open")
        part = part_dir(tmp, processes)
        os.makedirs(part)
        save_leaves(os.path.join(part, "student.npz"), jax.device_get(runners))
    else:
        import orbax.checkpoint as ocp

        part = tmp
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(os.path.abspath(tmp), "student"), jax.device_put(runners, jax.local_devices()[0]))
            ckptr.wait_until_finished()
    if write is not None:
        write(part)
    if processes.many:
        multihost.barrier(f"checkpoint-{iteration}-written")
        meta = {**meta, "processes": processes.count}
    if processes.main:
        write_atomic(os.path.join(tmp, "meta.json"), json.dumps({**meta, "iteration": iteration}, indent=2) + "\n")
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
        write_atomic(os.path.join(root, "LATEST"), _name(iteration) + "\n")
        done = sorted(d for d in os.listdir(root) if d.startswith("it-"))
        for d in done[:-KEEP]:
            shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    if processes.many:
        multihost.barrier(f"checkpoint-{iteration}-published")
    return final


def save_leaves(path: str, tree) -> None:
    """The leaves of a host pytree into one ``.npz`` (``leaf_<j>`` in ``jax.tree.leaves`` order)."""
    import jax
    import numpy as np

    with open(path, "wb") as f:
        np.savez(f, **{f"leaf_{j}": np.asarray(x) for j, x in enumerate(jax.tree.leaves(tree))})


def load_leaves(path: str, like):
    """The pytree saved by ``save_leaves``, each leaf placed as its ``like`` counterpart."""
    import jax
    import numpy as np

    leaves, treedef = jax.tree.flatten(like)
    with np.load(path) as z:
        if len(z.files) != len(leaves) or any(z[f"leaf_{j}"].shape != x.shape for j, x in enumerate(leaves)):
            raise ValueError(f"{path!r} does not hold this run's student state (another version or config)")
        return jax.tree.unflatten(treedef, [jax.device_put(z[f"leaf_{j}"].astype(x.dtype), x.sharding) for j, x in enumerate(leaves)])


def load_checkpoint(path: str, runners_like, processes=None):
    """Restore ``(meta, runners)`` from ``path``, each array placed as its ``runners_like``
    counterpart (sharded over devices or not); the host side: ``bidijax.teaching.load`` (of
    ``part_dir(path, processes)``). ``processes``: this process's part of a several-process checkpoint."""
    import jax
    import orbax.checkpoint as ocp

    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    written, count = int(meta.get("processes", 1)), processes.count if processes is not None else 1
    if written != count:
        raise ValueError(f"checkpoint {path!r} was written by {written} process(es); resume it with --num-processes {written}, not {count}")
    if count > 1:
        part = part_dir(path, processes)
        if not os.path.isfile(os.path.join(part, "student.npz")):
            raise ValueError(f"checkpoint {path!r} has no part for process {processes.index} ({part!r} is missing)")
        return meta, load_leaves(os.path.join(part, "student.npz"), runners_like)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, runners_like)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            runners = ckptr.restore(os.path.join(os.path.abspath(path), "student"), abstract)
    except Exception as err:  # noqa: BLE001 - orbax raises several kinds on a mismatched tree
        raise ValueError(
            f"checkpoint {path!r} does not hold this version's student state ({type(err).__name__}); "
            "it was written by another bidijax version or config: start a new run directory"
        ) from None
    return meta, runners
