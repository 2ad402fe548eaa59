"""Small helpers shared by the tests: hand-made BabyAI scenes, one-line CLI errors."""

from __future__ import annotations

import contextlib
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from bidijax.envs import constants as C
from bidijax.envs.babyai import BabyAIState
from bidijax.envs.scene import Scene


def room(size: int = 8) -> np.ndarray:
    """MiniGrid cells of an empty walled room, ``uint8[size, size, 3]`` indexed (row, col)."""
    cells = np.zeros((size, size, 3), np.uint8)
    cells[...] = (C.WALL, C.GREY, 0)
    cells[1:-1, 1:-1] = (C.EMPTY, 0, 0)
    return cells


def state(cells, pos, direction, carrying=(0, 0, 0), mission=(C.TASK_GOTO, C.RED, C.BALL, C.ARTICLE_THE)):
    scene = Scene(
        cells=jnp.asarray(cells, jnp.uint8),
        agent_pos=jnp.asarray(pos, jnp.int32),
        agent_dir=jnp.asarray(direction, jnp.int32),
        carrying=jnp.asarray(carrying, jnp.uint8),
    )
    return BabyAIState(key=jax.random.PRNGKey(0), scene=scene, mission=jnp.asarray(mission, jnp.int32))


def one_line_error(capsys, argv, *needles) -> str:
    """Run the CLI on ``argv``: exit code 2 and one line on stderr, naming every ``needle``."""
    from bidijax.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def same(a, b, rtol=1e-5, atol=1e-7):
    """Rows equal up to float rounding (``atol`` for losses that are means of +/- terms near 0)."""
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            x, y = float(ra[k]), float(rb[k])
            assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=rtol, abs_tol=atol), (k, ra, rb)


def worker_env(**extra) -> dict:
    """The environment of a worker process on this CPU: one JAX device (no forced device count)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    env.pop("XLA_FLAGS", None)
    return env


@contextlib.contextmanager
def reaped(procs):
    """Kill every process of ``procs`` still running when the block ends: a failed test leaves none behind."""
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
