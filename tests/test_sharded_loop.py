"""The training loop split over 4 (forced host) devices gives every seed the numbers of the
one-device run, with the lanes split (4 seeds) or, when they are fewer than the devices, their
environments too (3 seeds: 1 x 4, 2 seeds: 2 x 2); the student stays sharded across iterations; checkpoints resume exactly and load
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
from bidijax.student import device_grid
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

    def spread(runners):  # devices of every leaf, and the blocks of lanes / envs each device holds
        leaves, envs = jax.tree.leaves(runners), jax.tree.leaves(runners.timestep)
        return dict(devices=sorted({len(x.sharding.device_set) for x in leaves}),
                    lanes=sorted({x.sharding.shard_shape(x.shape)[0] for x in leaves}),
                    envs=sorted({x.sharding.shard_shape(x.shape)[1] for x in envs}))

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

    # fewer lanes than devices: each lane's 8 environments are split too
    record("one_way-3", tiny("one_way", "oracle").replace(num_seeds=3))  # 1 x 4 (3 does not divide 4)
    record("ppo-2", tiny("ppo", "oracle").replace(num_seeds=2))  # 2 x 2

    # resume: killed after the checkpoint of iteration 1, resumed on 4 devices
    c = tiny("one_way", "oracle").replace(num_seeds=4)
    stopped_after_first(c, f"{tmp}/resumed")
    record("resumed", c, resume=True, run_dir=f"{tmp}/resumed")

    # the sharded run's checkpoint loads into a one-device loop, and into a 4-device one sharded
    ckpt = rundir.latest_checkpoint(f"{tmp}/one_way-4")
    one = rundir.load_checkpoint(ckpt, Loop(c.replace(devices=1)).init().runners)[1]
    four = rundir.load_checkpoint(ckpt, Loop(c).init().runners)[1]
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(one), jax.device_get(four))
    out["load"] = dict(one=spread(one), four=spread(four))

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
    # one lane per device, each with all 8 environments, after every iteration
    assert sharded["spreads"] == [FOUR_BY_LANES] * 2
    assert plain["spread"] == dict(devices=[1], lanes=[4], envs=[8])


FOUR_BY_LANES = dict(devices=[4], lanes=[1], envs=[8])


@pytest.mark.parametrize("name, arm, seeds, blocks", [("one_way-3", "one_way", 3, dict(lanes=[3], envs=[2])),
                                                      ("ppo-2", "ppo", 2, dict(lanes=[1], envs=[4]))])
def test_fewer_lanes_than_devices_split_the_environments_too(result, name, arm, seeds, blocks):
    # 3 lanes x 8 envs: all 3 lanes on each device, 2 envs each; 2 lanes: 1 lane and 4 envs each
    assert result[name]["spread"] == dict(devices=[4], **blocks)
    # seeds are independent and sharding changes no number: seeds 0..n-1 of the 4-seed one-device run
    same(result[name]["rows"], [r for r in result[f"{arm}-1"]["rows"] if r["seed"] < seeds])


def test_sharded_run_resumes_exactly_and_its_checkpoint_loads_anywhere(result):
    same(result["resumed"]["rows"], result["one_way-4"]["rows"], rtol=0, atol=0)
    assert result["resumed"]["spread"] == FOUR_BY_LANES
    assert result["load"] == dict(one=dict(devices=[1], lanes=[4], envs=[8]), four=FOUR_BY_LANES)


def test_devices_errors_are_one_line(result):
    errors = {int(k): v for k, v in result["errors"].items()}
    assert errors[3] == "devices=3 cannot split 4 lanes x 8 envs evenly (lanes, then envs, over devices); use 0 or one of 1, 2, 4"
    assert "devices=8 but this machine has 4 local device(s)" in errors[8]


def test_device_grid():
    # (lane devices, env devices): the most devices, then the most of them on lanes; no padding
    assert [device_grid(lanes, 64, 0, 4) for lanes in (1, 2, 3, 4, 5, 6, 8)] == [(1, 4), (2, 2), (1, 4), (4, 1), (1, 4), (2, 2), (4, 1)]
    assert device_grid(5, 6, 0, 4) == (1, 3) and device_grid(3, 1, 0, 4) == (3, 1) and device_grid(3, 64, 0, 1) == (1, 1)
    assert device_grid(4, 64, 1, 4) == (1, 1) and device_grid(4, 64, 2, 4) == (2, 1) and device_grid(3, 64, 2, 4) == (1, 2)
    with pytest.raises(ValueError, match=r"^devices=-1 must be >= 0"):
        cfg.resolve(cfg.TrainConfig(devices=-1))
    with pytest.raises(ValueError, match=r"^devices=3 cannot split 5 lanes x 4 envs evenly .* use 0 or one of 1, 2, 4$"):
        device_grid(5, 4, 3, 4)
