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

A full disk (``ENOSPC``, ``EDQUOT``) while writing any of these raises ``DiskFull``: one line
naming the file and the run's last complete checkpoint. Nothing written before is lost: a failed
checkpoint's temporary directory is removed (freeing its space) and the previous checkpoint stays
``LATEST``; a failed append to ``metrics.csv`` is cut back to the last complete row. After space is
freed, ``--resume`` continues as after a kill.

A run of several processes (``bidijax.multihost``) writes one part per process into the same
checkpoint, ``it-000010/process-<p>/`` (that process's lanes: student ``student.npz``, tables,
teachers), and process 0 publishes it (meta.json, rename, ``LATEST``) once every part is written
(a barrier); every process then loads its own part on resume.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import shutil


CONFIG = "config.json"
METRICS = "metrics.csv"
CHECKPOINTS = "checkpoints"
KEEP = 2  # complete checkpoints kept


class DiskFull(ValueError):
    """The disk (or the user's quota) filled up while a run wrote its directory; the run stopped,
    and everything it had completed before (config, metric rows, checkpoints) is intact."""


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT), "os_error_code='28'", "os_error_code='122'")


def is_disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` or an exception it was raised from is a full disk: an ``OSError`` with
    ``ENOSPC``/``EDQUOT``, or a wrapped one (orbax/tensorstore raise ``ValueError`` naming it)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFull) or (isinstance(err, OSError) and err.errno in _FULL_ERRNOS):
            return True
        if any(t in str(err) for t in _FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def _no_space_left(path: str) -> bool:
    """Whether the file system holding ``path`` has (almost) no space left for this user; for
    writers that report a full disk without its errno (e.g. ``torch.save``)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_blocks > 0 and st.f_bavail * st.f_frsize < (1 << 20)


def _disk_full(what: str, run_dir: str | None, err: BaseException) -> DiskFull:
    """The one-line ``DiskFull`` for a failed write of ``what`` (a path) in ``run_dir``."""
    if isinstance(err, DiskFull):
        return err
    reason = "quota exceeded" if isinstance(err, OSError) and err.errno == errno.EDQUOT else "no space left on device"
    text = f"disk full ({reason}) while writing {what}"
    if run_dir is None:
        return DiskFull(text + "; nothing else was changed: free space and try again")
    last = latest_checkpoint(run_dir)
    kept = f"its last checkpoint {os.path.basename(last)} is intact" if last else "it has no checkpoint yet"
    return DiskFull(f"{text}; the run stopped and {kept}: free space and continue with --resume {run_dir}")


def write_atomic(path: str, text: str, run_dir: str | None = None) -> None:
    """Write ``text`` to ``path`` through a synced temporary file and a rename (never half a file);
    on a full disk the temporary file is removed, ``path`` is unchanged and ``DiskFull`` is raised."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if is_disk_full(err):
            raise _disk_full(path, run_dir, err) from err
        raise


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
    write_atomic(os.path.join(run_dir, CONFIG), json.dumps(config, indent=2, sort_keys=True) + "\n", run_dir)


class Damaged(ValueError):
    """A file of a run directory that cannot be read back (truncated, corrupt, not what it should hold)."""


@contextlib.contextmanager
def reading(path: str):
    """Turn the errors of reading ``path`` back (a truncated ``.npz``, broken JSON, a missing
    entry, an unreadable file) into one ``Damaged`` line that names the file."""
    import zipfile

    try:
        yield
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as err:
        detail = str(err).splitlines()[0] if str(err) else ""
        raise Damaged(f"{path!r} cannot be read back ({type(err).__name__}{': ' + detail if detail else ''})") from None


def read_json(path: str, what: str = "a JSON object") -> dict:
    """``path``'s JSON object; ``Damaged`` (one line naming the file) if it is not one."""
    with reading(path), open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise Damaged(f"{path!r} must hold {what}, got a {type(data).__name__}")
    return data


def read_config(run_dir: str) -> dict:
    if not is_run_dir(run_dir):
        raise ValueError(f"{run_dir!r} is not a bidijax run directory (no {CONFIG})")
    return read_json(os.path.join(run_dir, CONFIG), "the run's config (a JSON object of settings)")


# ---------------------------------------------------------------------------------------------
# metrics.csv


class MetricsLog:
    """Appends metric rows to ``metrics.csv`` (header from the first row), synced per write. An
    append that fails (full disk) is cut back, so the file always ends with a complete row."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, METRICS)
        self.columns: list[str] | None = None
        if os.path.exists(self.path):
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), None)
            self.columns = header or None

    def log(self, rows: list[dict]) -> None:
        if not rows:
            return
        columns = self.columns or list(rows[0])
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
        if self.columns is None:
            w.writeheader()
        w.writerows(rows)
        data = text.getvalue().encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException as err:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)  # no torn row: the file ends where it did
                if isinstance(err, Exception) and is_disk_full(err):
                    raise _disk_full(self.path, self.run_dir, err) from err
                raise
        finally:
            os.close(fd)
        self.columns = columns

    def truncate(self, iteration: int) -> None:
        """Keep only complete rows of iterations ``<= iteration`` (after a resume)."""
        if not os.path.exists(self.path):
            return
        rows = read_metrics(os.path.dirname(self.path))
        kept = [r for r in rows if int(r["iteration"]) <= iteration]
        if not self.columns:
            return
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=self.columns)
        w.writeheader()
        w.writerows(kept)
        write_atomic(self.path, text.getvalue(), self.run_dir)


def _typed(text: str):
    """A metric value as written by ``MetricsLog``: ``int`` or ``float`` where it parses as one
    (``repr`` of a float reads back exactly), else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_metrics(run_dir: str, typed: bool = False) -> list[dict]:
    """Rows of ``metrics.csv`` as dicts of strings (``typed``: of ints and floats, as the loop
    produced them); a torn last line (killed mid-write) is skipped."""
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
            out.append({k: _typed(v) for k, v in row.items()} if typed else row)
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


def resume_checkpoint(run_dir: str, lanes: int) -> str | None:
    """The checkpoint a resume starts from: the newest complete one whose iterations all have
    their ``lanes`` rows in metrics.csv. A row lost after its checkpoint was written (a torn last
    line) would otherwise never be recomputed; the run then goes back to the checkpoint before
    (``KEEP`` are kept), or to the start, and recomputes the same rows."""
    root = _ckpt_root(run_dir)
    done = sorted(d for d in os.listdir(root) if d.startswith("it-") and os.path.isfile(os.path.join(root, d, "meta.json"))) \
        if os.path.isdir(root) else []  # fmt: skip
    counts: dict[int, int] = {}
    for r in read_metrics(run_dir):
        counts[int(r["iteration"])] = counts.get(int(r["iteration"]), 0) + 1
    for d in reversed(done):
        if all(counts.get(i, 0) >= lanes for i in range(1, int(d[3:]) + 1)):
            return os.path.join(root, d)
    return None


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
    try:
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
            part = tmp
            _save_student(os.path.join(os.path.abspath(tmp), "student"), runners)
        if write is not None:
            write(part)
        if processes.many:
            multihost.barrier(f"checkpoint-{iteration}-written")
            meta = {**meta, "processes": processes.count}
        if processes.main:
            write_atomic(os.path.join(tmp, "meta.json"), json.dumps({**meta, "iteration": iteration}, indent=2) + "\n", run_dir)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.rename(tmp, final)
            write_atomic(os.path.join(root, "LATEST"), _name(iteration) + "\n", run_dir)
    except Exception as err:  # a kill (KeyboardInterrupt, SIGKILL) leaves the temporary directory to clean_partial
        full = is_disk_full(err) or _no_space_left(root)
        if processes.main:
            shutil.rmtree(tmp, ignore_errors=True)  # frees the space a partial checkpoint took
        if full:
            raise _disk_full(f"checkpoint {final}", run_dir, err) from err
        raise
    if processes.main:
        done = sorted(d for d in os.listdir(root) if d.startswith("it-"))
        for d in done[:-KEEP]:
            shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    if processes.many:
        multihost.barrier(f"checkpoint-{iteration}-published")
    return final


def _closed_loop_filter(previous):
    """An ``unraisablehook`` dropping ``RuntimeError('Event loop is closed')``: after a failed
    orbax save, tensorstore's pending writes finish on threads whose event loop orbax has closed,
    and each prints that traceback (possibly after the save has returned). Everything else goes
    to ``previous``."""

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        previous(unraisable)

    hook.bidijax_filter = True
    return hook


#: wall time a student checkpoint's write may take, suspensions of the process included
SAVE_TIMEOUT_S = 7 * 24 * 3600


def _save_student(path: str, runners) -> None:
    """The student through orbax. Orbax's threads log each write error (a full disk) at ERROR
    level with tracebacks, and the error is raised here as well: those logs are dropped while it
    saves, and after a failure the late ``Event loop is closed`` tracebacks too (the run stops)."""
    import sys

    import jax
    import orbax.checkpoint as ocp

    logger = logging.getLogger("absl")
    level, hook = logger.level, sys.unraisablehook
    logger.setLevel(logging.CRITICAL)
    if not getattr(hook, "bidijax_filter", False):
        sys.unraisablehook = _closed_loop_filter(hook)
    try:
        # orbax's default is to give up on a write after 20 min of wall time; a run suspended
        # meanwhile (Ctrl-Z, SIGSTOP, a scheduler's suspend) then crashed when it woke up
        with ocp.StandardCheckpointer(async_options=ocp.AsyncOptions(timeout_secs=SAVE_TIMEOUT_S)) as ckptr:
            ckptr.save(path, jax.device_put(runners, jax.local_devices()[0]))  # one device: any count loads it
            ckptr.wait_until_finished()
    except BaseException:
        raise  # the filter stays: tensorstore's late callbacks may still come
    else:
        sys.unraisablehook = hook
    finally:
        logger.setLevel(level)


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
    with reading(path), np.load(path) as z:
        if len(z.files) != len(leaves) or any(z[f"leaf_{j}"].shape != x.shape for j, x in enumerate(leaves)):
            raise ValueError(f"{path!r} does not hold this run's student state (another version or config)")
        return jax.tree.unflatten(treedef, [jax.device_put(z[f"leaf_{j}"].astype(x.dtype), x.sharding) for j, x in enumerate(leaves)])


def checkpoint_meta(path: str) -> dict:
    """Checkpoint ``path``'s ``meta.json``: its iteration, seeds and (several processes) process count."""
    return read_json(os.path.join(path, "meta.json"), "a checkpoint's metadata (a JSON object)")


def load_checkpoint(path: str, runners_like, processes=None):
    """Restore ``(meta, runners)`` from ``path``, each array placed as its ``runners_like``
    counterpart (sharded over devices or not); the host side: ``bidijax.teaching.load`` (of
    ``part_dir(path, processes)``). ``processes``: this process's part of a several-process checkpoint."""
    import jax
    import orbax.checkpoint as ocp

    meta = checkpoint_meta(path)
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
