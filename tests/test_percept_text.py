"""Golden percepts and BabyAI-Text for hand-built scenes; key equality iff text equality."""

import jax
import jax.numpy as jnp
import pytest

from bidijax import envs
from bidijax.envs import constants as C
from helpers import room, state

NORTH, EAST = 3, 0
percept = jax.jit(envs.percept)


def text(s):
    return envs.describe(s.mission, percept(s))


def test_walls_and_offsets():
    cells = room()
    cells[3, 2] = (C.BALL, C.RED, 0)
    s = state(cells, (6, 3), NORTH)
    # the right-hand wall (col 7) is 4 steps away: outside the 3 cells the view shows
    assert text(s) == "You see a wall 6 steps forward, You see a wall 3 steps left, You see a red ball 1 step left and 3 steps forward"
    p = percept(s)
    assert p.walls.tolist() == [6, 3, 0]
    assert p.objects[0].tolist() == [C.BALL, C.RED, 0, 3, -1]
    assert p.objects.dtype == jnp.int32 and p.objects.shape == (envs.percept.__defaults__[0], 5)


def test_object_blocks_wall_ray_and_order():
    cells = room()
    # objects are listed by view column, then from far to near (the text wrapper's order)
    cells[5, 3] = (C.BALL, C.RED, 0)  # right in front: hides nothing, stops the wall ray
    cells[4, 3] = (C.BOX, C.BLUE, 0)
    cells[6, 5] = (C.KEY, C.YELLOW, 0)  # two steps right, same row as the agent
    s = state(cells, (6, 3), NORTH)
    assert text(s) == (
        "You see a wall 3 steps left, You see a blue box 2 steps forward, You see a red ball 1 step forward, "
        "You see a yellow key 2 steps right"
    )


def test_occlusion_behind_wall_row():
    cells = room()
    cells[5, 1:7] = (C.WALL, C.GREY, 0)  # a wall across the room in front of the agent
    cells[3, 3] = (C.BALL, C.RED, 0)  # hidden behind it
    s = state(cells, (6, 3), NORTH)
    assert text(s) == "You see a wall 1 step forward, You see a wall 3 steps left"
    image = jax.jit(envs.egocentric_view)(s.scene)
    assert int(image[3, 3, 0]) == C.UNSEEN and int(image[3, 5, 0]) == C.WALL


def test_carried_object_and_doors():
    cells = room()
    cells[5, 3] = (C.DOOR, C.RED, C.CLOSED)
    cells[6, 1] = (C.DOOR, C.GREEN, C.OPEN)  # first thing on the left ray: no wall is reported
    s = state(cells, (6, 3), NORTH, carrying=(C.KEY, C.BLUE, 0))
    assert text(s) == (
        "You carry a blue key, You see an open green door 2 steps left, "
        "You see a closed red door 1 step forward"
    )
    image = jax.jit(envs.egocentric_view)(s.scene)
    assert image[3, 6].tolist() == [C.KEY, C.BLUE, 0]  # the agent's cell shows what it carries


def test_view_reaches_six_cells_ahead():
    cells = room(10)
    cells[1, 8] = (C.BALL, C.GREEN, 0)
    s = state(cells, (1, 2), EAST)  # ball 6 steps ahead along the top corridor
    p = percept(s)
    assert p.objects[0].tolist() == [C.BALL, C.GREEN, 0, 6, 0]
    assert p.walls.tolist() == [0, 1, 0]


def test_prompt_format_and_batching():
    cells = room()
    cells[3, 2] = (C.BALL, C.RED, 0)
    s = state(cells, (6, 3), NORTH)
    prompt = envs.prompt(s.mission, percept(s))
    assert prompt.startswith("Goal of the agent: go to the red ball\nObservation: You see a wall 6 steps forward")
    assert prompt.endswith("\nAction:")
    batch = jax.tree.map(lambda x: jnp.stack([x, x]), s)
    ps = jax.vmap(envs.percept)(batch)
    assert envs.prompt(batch.mission, ps) == [prompt, prompt]
    assert envs.mission_text([C.TASK_GOTO, C.GREY, C.KEY, C.ARTICLE_A]) == "go to a grey key"


def test_overflow_is_flagged():
    cells = room()
    for col in range(1, 7):
        cells[3, col] = (C.BALL, C.PURPLE, 0)
    s = state(cells, (6, 3), NORTH)
    assert not bool(envs.percept(s, max_objects=6).overflow)
    assert bool(envs.percept(s, max_objects=5).overflow)


@pytest.fixture(scope="module")
def random_situations():
    """Missions and percepts of random-policy rollouts in GoToLocal (many objects, pickups)."""
    env = envs.make("BabyAI-GoToLocal-v0")
    n, steps = 64, 150

    @jax.jit
    def run(key):
        ts = jax.vmap(env.reset)(jax.random.split(key, n))

        def body(ts, k):
            a = jax.random.randint(k, (n,), 0, C.NUM_ACTIONS)
            ts = jax.vmap(env.step)(ts, a)
            p = jax.vmap(envs.percept)(ts.state)
            return ts, (ts.state.mission, p, jax.vmap(envs.situation_key)(ts.state.mission, p))

        _, out = jax.lax.scan(body, ts, jax.random.split(key, steps))
        return out

    missions, p, keys = jax.device_get(run(jax.random.PRNGKey(7)))
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    return flat(missions), jax.tree.map(flat, p), flat(keys)


def test_key_equal_iff_text_equal(random_situations):
    missions, p, keys = random_situations
    texts = envs.prompt(missions, p)
    key_of_text, text_of_key = {}, {}
    for t, k in zip(texts, map(tuple, keys)):
        assert key_of_text.setdefault(t, k) == k
        assert text_of_key.setdefault(k, t) == t
    assert len(key_of_text) > 1000  # the sample really has many distinct situations
    assert any(t.count("You carry") for t in texts)


def test_key_matches_unbatched_and_is_uint32(random_situations):
    missions, p, keys = random_situations
    i = 123
    one = envs.situation_key(jnp.asarray(missions[i]), jax.tree.map(lambda x: jnp.asarray(x[i]), p))
    assert one.dtype == jnp.uint32 and one.shape == (2,)
    assert one.tolist() == keys[i].tolist()
