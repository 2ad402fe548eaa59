"""One process of a two-process run dies (SIGKILL, right after it published checkpoint 2): the
other stops at its next collective with one line and exit code 1 (not after JAX's heartbeat
timeout, not with an abort), the run directory keeps every row up to the checkpoint and the
checkpoint itself, and ``--resume`` with two new processes finishes the run with the rows of an
uninterrupted one-process run."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from bidijax import rundir
from bidijax.loop import train
from helpers import reaped, same, worker_env
from test_loop import cli_flags, comparable, tiny
from test_multihost import _free_port

HERE = os.path.dirname(os.path.abspath(__file__))

# process 1 runs through ``train`` so that it can die at a chosen moment: after checkpoint 2
VICTIM = textwrap.dedent(
    """
    import os, signal, sys
    from bidijax import multihost
    port, run_dir = sys.argv[1], sys.argv[2]
    processes = multihost.initialize(f"localhost:{port}", 2, 1)
    sys.path.insert(0, HERE)
    from test_loop import tiny
    from bidijax.loop import train

    def die(rows, state):
        if state.iteration == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    train(tiny("ppo", "oracle").replace(num_seeds=4, iterations=4), run_dir, on_iteration=die, processes=processes)
    """
).replace("HERE", repr(HERE))


def _cli(pid: int, port: int, *flags: str) -> subprocess.Popen:
    code = "import sys; from bidijax.cli import main; sys.exit(main(sys.argv[1:]))"
    args = [*flags, f"--coordinator=localhost:{port}", "--num-processes=2", f"--process-id={pid}", "--quiet"]
    return subprocess.Popen([sys.executable, "-c", code, "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=worker_env())  # fmt: skip


def test_a_dead_process_stops_the_run_cleanly_and_it_resumes(tmp_path):
    c = tiny("ppo", "oracle").replace(num_seeds=4, iterations=4)
    run = str(tmp_path / "run")
    port = _free_port()
    survivor = _cli(0, port, *cli_flags(c), f"--run-dir={run}")
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, str(port), run], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=worker_env())  # fmt: skip
    with reaped([survivor, victim]):
        _, reference = train(c, str(tmp_path / "one"))  # the uninterrupted run, meanwhile
        assert victim.wait(timeout=900) == -signal.SIGKILL
        died = time.time()
        _, err = survivor.communicate(timeout=600)
        waited = time.time() - died
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert survivor.returncode == 1, err[-3000:]
    assert lines[-1].startswith("bidijax train: another process of the run stopped"), err[-3000:]
    assert "--resume" in lines[-1] and "Check failure" not in err
    assert waited < 60  # at its next collective, long before JAX's 100 s heartbeat timeout
    assert rundir.latest_checkpoint(run).endswith("it-000002")
    kept = comparable(rundir.read_metrics(run))
    assert len(kept) in (8, 12)  # iterations 1-2 (and 3, if its rows were gathered before the loss)
    same(kept, comparable(reference)[: len(kept)])
    port = _free_port()
    with reaped([_cli(p, port, f"--resume={run}") for p in (0, 1)]) as resumed:
        outs = [p.communicate(timeout=900) for p in resumed]
    assert [p.returncode for p in resumed] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    same(comparable(rundir.read_metrics(run)), comparable(reference))
