"""A run split over two ``jax.distributed`` processes (CPU, localhost coordinator) gives every
seed the rows of the one-process run; its checkpoint resumes exactly; only process 0 writes the
run directory; bad process flags get one line.

Two worker processes (started once, concurrently with the one-process reference run in this
process) run: the ppo and one_way arms through ``bidijax train --coordinator ...`` (4 seeds, 2
per process), a ``bidijax sweep`` of two programs, then a one_way run killed after iteration 1 and
resumed from its directory.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bidijax import config as cfg
from bidijax import multihost, rundir
from bidijax import sweep as sw
from bidijax.loop import train
from helpers import one_line_error, reaped, same, worker_env
from test_loop import cli_flags, comparable, tiny

HERE = os.path.dirname(os.path.abspath(__file__))

WORKER = textwrap.dedent(
    """
    import json, sys
    from bidijax.cli import main  # nothing else first: jax.distributed joins before JAX's backend starts

    pid, port, tmp, arms = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    flags = [f"--coordinator=localhost:{port}", "--num-processes=2", f"--process-id={pid}", "--quiet"]
    out = {}
    for arm, arm_flags in arms.items():
        out[arm] = main(["train", f"--run-dir={tmp}/{arm}", *arm_flags, *flags])
    out["sweep"] = main(["sweep", f"{tmp}/sweep.json", f"--out={tmp}/sweep", *flags])

    sys.path.insert(0, HERE)
    from test_loop import tiny, comparable, stopped_after_first
    from bidijax.loop import train

    c = tiny("one_way", "oracle").replace(num_seeds=4)  # the CLI joined jax.distributed: train() knows its place
    stopped_after_first(c, f"{tmp}/resumed")
    state, rows = train(c, f"{tmp}/resumed", resume=True)
    out["resumed"] = comparable(rows)
    out["local_lanes"] = len(state.tables)
    print("RESULT" + json.dumps(out))
    """
).replace("HERE", repr(HERE))


# two programs (arm), each with two cells (ppo.lr) x 2 seeds = 4 lanes: 2 per process
SWEEP = {
    "base": {k: v for k, v in cfg.to_dict(tiny("ppo", "oracle")).items() if k not in ("num_seeds", "seed", "cells")},
    "seeds": 2,
    "grid": {"arm": ["ppo", "one_way"], "ppo.lr": [2.5e-4, 1e-3]},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("multihost"))
    env = worker_env()
    port = str(_free_port())
    arms = json.dumps({arm: cli_flags(tiny(arm, "oracle").replace(num_seeds=4)) for arm in ("ppo", "one_way")})
    with open(os.path.join(tmp, "sweep.json"), "w") as f:
        json.dump(SWEEP, f)
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(p), port, tmp, arms], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)  # fmt: skip
        for p in (0, 1)
    ]
    with reaped(workers):
        reference = {}  # the same runs in one process, meanwhile
        for arm in ("ppo", "one_way"):
            _, rows = train(tiny(arm, "oracle").replace(num_seeds=4), os.path.join(tmp, f"one-{arm}"))
            reference[arm] = comparable(rows)
        sw.run(sw.plan(SWEEP), os.path.join(tmp, "one-sweep"))
        outs = [w.communicate(timeout=1500) for w in workers]
    for w, (stdout, stderr) in zip(workers, outs):
        assert w.returncode == 0, stderr[-3000:]
    got = [json.loads(stdout.split("RESULT", 1)[1]) for stdout, _ in outs]
    return dict(tmp=tmp, reference=reference, workers=got, stdout=[o for o, _ in outs])


@pytest.mark.parametrize("arm", ["ppo", "one_way"])
def test_two_processes_give_each_seed_its_one_process_rows(result, arm):
    d = os.path.join(result["tmp"], arm)
    rows = comparable(rundir.read_metrics(d))  # written by process 0 alone, every seed's rows
    assert [int(r["seed"]) for r in rows] == [0, 1, 2, 3] * 2
    same(rows, result["reference"][arm])
    assert all(w[arm] == 0 for w in result["workers"])
    # process 0 published one checkpoint with one part per process
    ckpt = rundir.latest_checkpoint(d)
    assert ckpt.endswith("it-000002") and sorted(p for p in os.listdir(ckpt) if p.startswith("process-")) == ["process-0", "process-1"]
    with open(os.path.join(ckpt, "meta.json")) as f:
        assert json.load(f)["processes"] == 2
    assert set(os.listdir(d)) == {"config.json", "metrics.csv", "checkpoints", rundir.LOCK}


def test_only_process_0_prints(result):
    assert "run directory:" in result["stdout"][0]
    before = result["stdout"][1].split("RESULT")[0].splitlines()
    assert [line for line in before if line.strip() and not line.startswith("[Gloo]")] == []  # gloo's own connection line


def test_two_process_run_resumes_exactly(result):
    for w in result["workers"]:
        assert w["local_lanes"] == 2  # each process holds its two lanes' tables
        # the resumed run's rows (every process gets them all) equal the uninterrupted run's
        same(w["resumed"], result["reference"]["one_way"])
    resumed = comparable(rundir.read_metrics(os.path.join(result["tmp"], "resumed")))
    uninterrupted = comparable(rundir.read_metrics(os.path.join(result["tmp"], "one_way")))
    assert resumed == uninterrupted


def test_a_two_process_sweep_gives_the_one_process_sweep(result):
    assert all(w["sweep"] == 0 for w in result["workers"])
    two, one = (os.path.join(result["tmp"], d) for d in ("sweep", "one-sweep"))
    rows = lambda d: comparable(rundir.read_metrics(d))  # the tidy metrics.csv: cell, swept values, seed, ...
    assert len(rows(two)) == 2 * 2 * 2 * 2  # programs x cells x seeds x iterations
    names = lambda d: [(r.pop("cell"), r.pop("arm")) for r in d]
    got, want = rows(two), rows(one)
    assert names(got) == names(want)
    same(got, want)
    assert sorted(os.listdir(os.path.join(two, "programs"))) == ["p00", "p01"]
    assert {"summary.csv", "summary.md", "spec.yaml", "sweep.json"} <= set(os.listdir(two))
    assert "cells x 2 seeds in 2 program(s)" in result["stdout"][0]
    assert "cells x" not in result["stdout"][1]


def test_one_process_refuses_a_two_process_checkpoint(result):
    with pytest.raises(ValueError, match="written by 2 process") as err:
        train(tiny("one_way", "oracle").replace(num_seeds=4), os.path.join(result["tmp"], "resumed"), resume=True)
    assert "\n" not in str(err.value)


def test_render_reads_the_part_of_the_process_that_ran_the_lane(result, tmp_path):
    import jax

    from bidijax.cli import main
    from bidijax.render import load_lane

    two, one = os.path.join(result["tmp"], "one_way"), os.path.join(result["tmp"], "one-one_way")
    for lane in (1, 2):  # lane 1 in process 0's part, lane 2 in process 1's
        _, got, table = load_lane(two, lane)
        _, want, want_table = load_lane(one, lane)
        for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(table.keys), np.asarray(want_table.keys))
    out = tmp_path / "lane3.gif"
    assert main(["render", two, "--seed-index", "3", "--out", str(out), "--episodes", "1"]) == 0 and out.stat().st_size > 0


@pytest.mark.parametrize("flags, message", [
    (["--num-processes=3", "--process-id=0"], "num_processes=3 does not divide the 4 lanes"),
    (["--num-processes=2", "--process-id=2"], "process_id=2 must lie in [0, 2)"),
    (["--num-processes=2"], "give --num-processes and --process-id together"),
    (["--num-processes=2", "--process-id=0", "--heartbeat-timeout=0"], "--heartbeat-timeout=0 must be >= 1 second"),
])  # fmt: skip
def test_bad_process_flags_are_one_line(tmp_path, capsys, flags, message):
    argv = ["train", f"--run-dir={tmp_path / 'run'}", "--coordinator=localhost:1", *cli_flags(tiny().replace(num_seeds=4)), *flags]
    one_line_error(capsys, argv, message)  # refused before joining jax.distributed
    assert not os.path.exists(tmp_path / "run")


def test_bad_sweep_process_flags_are_one_line(tmp_path, capsys):
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps(SWEEP))  # programs of 2 cells x 2 seeds = 4 lanes
    flags = ["--coordinator=localhost:1", "--num-processes=3", "--process-id=0"]
    one_line_error(capsys, ["sweep", str(spec), f"--out={tmp_path / 'out'}", *flags], "num_processes=3 does not divide the 4 lanes")
    one_line_error(capsys, ["sweep", str(spec), *flags], "several processes need one --out")
    assert not os.path.exists(tmp_path / "out")


def test_lane_blocks():
    assert [multihost.lane_block(6, multihost.Processes(p, 3)) for p in range(3)] == [[0, 1], [2, 3], [4, 5]]
    assert multihost.lane_block(4, multihost.SINGLE) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="does not divide the 5 lanes"):
        multihost.lane_block(5, multihost.Processes(0, 2))
    with pytest.raises(ValueError, match=r"process_id=-1 must lie in \[0, 2\)"):
        multihost.check(4, 2, -1)
