"""A full disk while a run writes its directory (issue 15, "Hostile input").

Whichever write meets the full disk (the student through orbax, a teacher or table file, the
``LATEST`` pointer, a ``metrics.csv`` append), ``bidijax train`` stops with one line naming the
file and the last intact checkpoint, exit code 1, no traceback; nothing written before is lost
(no partial checkpoint left taking space, no torn metric row); after space is freed ``--resume``
ends with the metrics of an uninterrupted run. ``ENOSPC`` is injected where each writer would
raise it (a real full file system needs root: README "Long runs" reports that check).
"""

import errno
import os

import pytest

from bidijax import rundir, teaching
from bidijax.cli import main
from test_loop import cli_flags, same_rows, tiny

CONFIG = tiny("one_way", "noisy_oracle").replace(iterations=3)
FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("full") / "run")
    assert main(["train", *cli_flags(CONFIG), "--run-dir", d, "--quiet"]) == 0
    return rundir.read_metrics(d)


def _at_third(path) -> bool:
    return "it-000003" in str(path)


def fail_student(monkeypatch):
    real = rundir._save_student

    def save(path, runners):  # what orbax raises (tensorstore wraps the OS error)
        if _at_third(path):
            raise ValueError(f'RESOURCE_EXHAUSTED: Error writing local file "{path}/_sharding": Failed to write '
                             "8453 bytes to file 12: No space left on device [os_error_code='28']")  # fmt: skip
        real(path, runners)

    monkeypatch.setattr(rundir, "_save_student", save)


def fail_tables(monkeypatch):
    real = teaching.save_tables

    def save(path, tables):  # half a file written, then the disk is full
        if _at_third(path):
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04" + b"\0" * 4096)
            raise FULL
        real(path, tables)

    monkeypatch.setattr(teaching, "save_tables", save)


def fail_teacher_without_errno(monkeypatch):
    """``torch.save`` reports a full disk as ``RuntimeError: ... file write failed``: the file
    system's free space tells it apart."""
    real = teaching.save

    def save(directory, *args, **kw):
        if _at_third(directory):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: file write failed")
        real(directory, *args, **kw)

    monkeypatch.setattr(teaching, "save", save)
    monkeypatch.setattr(rundir, "_no_space_left", lambda path: True)


def fail_latest(monkeypatch):
    real = rundir.write_atomic

    def write(path, text, run_dir=None):  # after it-000003 was renamed into place
        if path.endswith("LATEST") and _at_third(text):
            raise rundir._disk_full(path, run_dir, FULL)
        real(path, text, run_dir)

    monkeypatch.setattr(rundir, "write_atomic", write)


def fail_metrics(monkeypatch):
    real = os.write
    calls = []

    def write(fd, data):  # a short write of iteration 3's rows, then ENOSPC
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if name.endswith(rundir.METRICS) and (calls or bytes(data).startswith(b"3,")):
            calls.append(len(data))
            if len(calls) == 1:
                return real(fd, bytes(data)[: len(data) // 2])
            raise FULL
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize(
    "inject, what, last",
    [
        (fail_student, "checkpoints/it-000003", "it-000002"),
        (fail_tables, "checkpoints/it-000003", "it-000002"),
        (fail_teacher_without_errno, "checkpoints/it-000003", "it-000002"),
        (fail_latest, "checkpoints/LATEST", "it-000002"),
        (fail_metrics, "metrics.csv", "it-000002"),
    ],
    ids=["student", "tables", "teacher-no-errno", "latest", "metrics"],
)
def test_full_disk_stops_with_one_line_and_resume_equals_uninterrupted(capsys, monkeypatch, tmp_path, uninterrupted,
                                                                       inject, what, last):  # fmt: skip
    d = str(tmp_path / "run")
    with monkeypatch.context() as m:
        inject(m)
        code = main(["train", *cli_flags(CONFIG), "--run-dir", d, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for needle in ("disk full", os.path.join(d, what), f"last checkpoint {last} is intact", f"--resume {d}"):
        assert needle in err, (needle, err)
    # nothing half-written is left behind or taking space; the previous checkpoint is the latest
    assert rundir.latest_checkpoint(d).endswith(last)
    assert not [n for n in os.listdir(os.path.join(d, "checkpoints")) if ".tmp" in n]
    with open(os.path.join(d, rundir.METRICS), "rb") as f:
        text = f.read()
    assert text.endswith(b"\n") and text.count(b"\n") == 1 + len(rundir.read_metrics(d))  # no torn row
    assert {r["iteration"] for r in rundir.read_metrics(d)} <= {"1", "2", "3"}
    # space freed: the run continues from its last checkpoint to the uninterrupted run's numbers
    assert main(["train", "--resume", d, "--quiet"]) == 0
    same_rows(rundir.read_metrics(d), uninterrupted)


def test_full_disk_when_resuming_is_one_line_and_keeps_the_run(capsys, monkeypatch, tmp_path, uninterrupted):
    """Still no space at ``--resume`` (rewriting metrics.csv fails): one line, the run untouched."""
    d = str(tmp_path / "run")
    with monkeypatch.context() as m:
        fail_tables(m)
        assert main(["train", *cli_flags(CONFIG), "--run-dir", d, "--quiet"]) == 1
    capsys.readouterr()
    before = {n: open(os.path.join(d, n), "rb").read() for n in (rundir.CONFIG, rundir.METRICS)}
    real = rundir.write_atomic

    def write(path, text, run_dir=None):
        if path.endswith(rundir.METRICS):
            raise rundir._disk_full(path, run_dir, FULL)
        real(path, text, run_dir)

    with monkeypatch.context() as m:
        m.setattr(rundir, "write_atomic", write)
        code = main(["train", "--resume", d, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "disk full" in err and "it-000002" in err, err
    assert before == {n: open(os.path.join(d, n), "rb").read() for n in before}
    assert rundir.latest_checkpoint(d).endswith("it-000002")
    assert main(["train", "--resume", d, "--quiet"]) == 0
    same_rows(rundir.read_metrics(d), uninterrupted)


def test_write_atomic_leaves_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    path = str(tmp_path / "LATEST")
    rundir.write_atomic(path, "it-000001\n")
    real = os.fsync

    def fsync(fd):
        raise FULL

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(rundir.DiskFull, match="disk full .* while writing .*LATEST"):
        rundir.write_atomic(path, "it-000002\n")
    monkeypatch.setattr(os, "fsync", real)
    assert open(path).read() == "it-000001\n" and os.listdir(tmp_path) == ["LATEST"]
