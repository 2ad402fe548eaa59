"""``bidijax train --distributed`` under SLURM: JAX detects the allocation from SLURM's variables.

No SLURM here, so two processes on this machine get the variables ``srun`` sets for a 2-task step
on one node (job id, node list ``localhost``, task count, task id, local id); JAX derives the
coordinator's port from the job id. Together they give every seed the rows of a one-process run.
"""

import os
import socket
import subprocess
import sys

from bidijax import rundir
from bidijax.loop import train
from helpers import reaped, same, worker_env
from test_loop import cli_flags, comparable, tiny

LOWEST = 65535 - 2**12 + 1  # JAX's SLURM coordinator port: job id % 4096 + this


def _free_slurm_job_id() -> int:
    for port in range(LOWEST + os.getpid() % 2000, 65536):
        with socket.socket() as s:
            try:
                s.bind(("localhost", port))
            except OSError:
                continue
        return port - LOWEST
    raise RuntimeError("no free port for the coordinator")


def test_distributed_flag_reads_a_slurm_allocation(tmp_path):
    c = tiny("one_way", "oracle").replace(num_seeds=4)
    run, job = str(tmp_path / "run"), _free_slurm_job_id()
    code = "import sys; from bidijax.cli import main; sys.exit(main(sys.argv[1:]))"
    procs = []
    for task in (0, 1):
        env = worker_env(SLURM_JOB_ID=str(job), SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2", SLURM_PROCID=str(task),
                         SLURM_LOCALID=str(task))  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-c", code, "train", *cli_flags(c), f"--run-dir={run}", "--distributed",
                                       "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))  # fmt: skip
    with reaped(procs):
        _, reference = train(c, str(tmp_path / "one"))  # meanwhile
        outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    same(comparable(rundir.read_metrics(run)), comparable(reference))
    ckpt = rundir.latest_checkpoint(run)
    assert sorted(p for p in os.listdir(ckpt) if p.startswith("process-")) == ["process-0", "process-1"]
