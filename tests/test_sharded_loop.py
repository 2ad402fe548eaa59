"""The training loop split over 4 (forced host) devices gives every seed the numbers of the
one-device run; the student stays sharded across iterations; checkpoints resume exactly and load
on any device count; ``devices`` is checked with one line.

One subprocess (the device flag must be set before jax is imported) runs every case and prints
its rows as JSON; the tests below compare them.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bidijax import config as cfg
from bidijax.student import lane_devices
from helpers import same

HERE = os.path.dirname(os.path.abspath(__file__))

SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    import jax, numpy as np
    sys.path.insert(0, HERE)
    from test_loop import tiny, comparable, stopped_after_first
    from bidijax import rundir
    from bidijax.loop import Loop, train

    assert len(jax.devices()) == 4
    tmp = tempfile.mkdtemp(prefix="sharded-loop-")
    out = {}

    def spread(runners):  # devices of every leaf, and whether every leaf is split on its lane axis
        leaves = jax.tree.leaves(runners)
        return sorted({len(x.sharding.device_set) for x in leaves}), all(
            x.sharding.spec[0] == "seed" for x in leaves if hasattr(x.sharding, "spec"))

    def record(name, c, on_iteration=None, resume=False, run_dir=None):
        run_dir = run_dir or f"{tmp}/{name}"
        state, rows = train(c, run_dir, resume=resume, on_iteration=on_iteration)
        out[name] = dict(rows=comparable(rows), spread=spread(state.runners))
        return state, run_dir

    for arm in ("ppo", "one_way"):
        c = tiny(arm, "oracle").replace(num_seeds=4)
        spreads = []  # after every iteration, not only the last
        record(f"{arm}-4", c, on_iteration=lambda rows, s: spreads.append(spread(s.runners)))
        out[f"{arm}-4"]["spreads"] = spreads
        record(f"{arm}-1", c.replace(devices=1))

    # uneven: 3 lanes on 4 devices -> 3 devices
    record("one_way-3", tiny("one_way", "oracle").replace(num_seeds=3))

    # resume: killed after the checkpoint of iteration 1, resumed on 4 devices
    c = tiny("one_way", "oracle").replace(num_seeds=4)
    stopped_after_first(c, f"{tmp}/resumed")
    record("resumed", c, resume=True, run_dir=f"{tmp}/resumed")

    # the sharded run's checkpoint loads into a one-device loop, and into a 4-device one sharded
    ckpt = rundir.latest_checkpoint(f"{tmp}/one_way-4")
    one = rundir.load_checkpoint(ckpt, Loop(c.replace(devices=1)).init().runners)[1]
    four = rundir.load_checkpoint(ckpt, Loop(c).init().runners)[1]
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(one), jax.device_get(four))
    out["load"] = dict(one=spread(one)[0], four=spread(four))

    errors = {}
    for devices in (3, 8):
        try:
            Loop(c.replace(devices=devices))
        except ValueError as err:
            errors[devices] = str(err)
    out["errors"] = errors
    print("RESULT" + json.dumps(out))
    """
).replace("HERE", repr(HERE))


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.split("RESULT", 1)[1])


@pytest.mark.parametrize("arm", ["ppo", "one_way"])
def test_four_devices_give_each_seed_its_one_device_numbers(result, arm):
    sharded, plain = result[f"{arm}-4"], result[f"{arm}-1"]
    same(sharded["rows"], plain["rows"])
    assert [r["seed"] for r in sharded["rows"]] == [0, 1, 2, 3] * 2
    assert sharded["spreads"] == [[[4], True]] * 2  # split over 4 devices after every iteration
    assert plain["spread"][0] == [1]


def test_three_seeds_on_four_devices_use_three(result):
    uneven = result["one_way-3"]
    assert uneven["spread"] == [[3], True]
    # seeds are independent: the 3 seeds' rows are those of seeds 0..2 of the 4-seed run
    same(uneven["rows"], [r for r in result["one_way-1"]["rows"] if r["seed"] < 3])


def test_sharded_run_resumes_exactly_and_its_checkpoint_loads_anywhere(result):
    same(result["resumed"]["rows"], result["one_way-4"]["rows"], rtol=0, atol=0)
    assert result["resumed"]["spread"] == [[4], True]
    assert result["load"] == dict(one=[1], four=[[4], True])


def test_devices_errors_are_one_line(result):
    errors = {int(k): v for k, v in result["errors"].items()}
    assert "devices=3 does not divide the 4 lanes" in errors[3] and "\n" not in errors[3]
    assert "devices=8 but this machine has 4 local device(s)" in errors[8]


def test_lane_devices():
    assert [lane_devices(lanes, 0, 4) for lanes in (1, 2, 3, 4, 5, 6, 8)] == [1, 2, 3, 4, 1, 3, 4]
    assert lane_devices(4, 1, 4) == 1 and lane_devices(4, 2, 4) == 2 and lane_devices(3, 0, 1) == 1
    with pytest.raises(ValueError, match=r"^devices=-1 must be >= 0"):
        cfg.resolve(cfg.TrainConfig(devices=-1))

