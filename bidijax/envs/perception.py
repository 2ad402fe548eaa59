"""BabyAI-Text percepts as fixed-shape integer arrays, and situation keys that hash them.

A ``Percept`` holds what a BabyAI-Text observation says (GLAM / Lamorel's text wrapper): the
distance to a wall straight ahead, to the left and to the right (0 when the first thing seen
along that line is not a wall), every visible object of the 7x7 view in the wrapper's order
(view column, then view row from far to near) with its type, colour, door state and its offsets
(steps forward, signed steps to the right), and what the agent carries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from . import constants as C
from .scene import scene_of
from .view import egocentric_view

#: Default number of object slots in a percept; ``percept(..., max_objects=)`` overrides it.
MAX_OBJECTS = 8
OBJECT_FIELDS = 5  # type, colour, door state, steps forward, steps right (negative: left)


class Percept(struct.PyTreeNode):
    walls: jax.Array  # int32[3]: steps to the wall forward, left, right (0: none seen)
    objects: jax.Array  # int32[K, 5]: (type, colour, state, forward, right); type 0 = empty slot
    carrying: jax.Array  # int32[2]: (type, colour) of the carried object; type 0 = nothing
    overflow: jax.Array  # bool: more objects were visible than the K slots hold


def _wall_distance(types: jax.Array) -> jax.Array:
    """Distance along a ray (cells nearest first) to a wall, if a wall is the first thing seen."""
    seen = (types != C.UNSEEN) & (types != C.EMPTY)
    first = jnp.argmax(seen)
    return jnp.where(jnp.any(seen) & (types[first] == C.WALL), first + 1, 0).astype(jnp.int32)


def percept_from_image(image: jax.Array, carrying: jax.Array, max_objects: int = MAX_OBJECTS) -> Percept:
    """Percept of a MiniGrid egocentric image ``uint8[7, 7, 3]`` (indexed ``[i, j]``)."""
    img = image.astype(jnp.int32)
    types = img[..., 0]
    vx, vy = C.AGENT_VX, C.AGENT_VY
    walls = jnp.stack(
        [
            _wall_distance(types[vx, vy - 1 :: -1]),
            _wall_distance(types[vx - 1 :: -1, vy]),
            _wall_distance(types[vx + 1 :, vy]),
        ]
    )
    flat = img.reshape(-1, 3)  # i-major, then j: the wrapper's iteration order
    is_obj = (flat[:, 0] > C.WALL).at[vx * C.VIEW + vy].set(False)
    # slot of each object = its rank in that order; a one-hot select avoids a scatter
    rank = jnp.cumsum(is_obj) - 1
    slot = is_obj[:, None] & (rank[:, None] == jnp.arange(max_objects)[None, :])  # [49, K]
    cell = jnp.arange(flat.shape[0])
    i, j = cell // C.VIEW, cell % C.VIEW
    state = jnp.where(flat[:, 0] == C.DOOR, flat[:, 2], 0)
    feats = jnp.stack([flat[:, 0], flat[:, 1], state, vy - j, i - vx], axis=-1)  # [49, 5]
    objects = jnp.sum(jnp.where(slot[:, :, None], feats[:, None, :], 0), axis=0)
    carried = carrying.astype(jnp.int32)[:2] * (carrying[0] > 0)
    return Percept(walls=walls, objects=objects, carrying=carried, overflow=jnp.sum(is_obj) > max_objects)


def percept(state, max_objects: int = MAX_OBJECTS) -> Percept:
    """Percept of a bidijax BabyAI state or a navix ``State`` (MiniGrid's view and occlusion).

    BabyAI states keep the egocentric image of their observation, which is reused here.
    """
    scene = scene_of(state)
    image = getattr(state, "view", None)
    if image is None:
        image = egocentric_view(scene)
    return percept_from_image(image, scene.carrying, max_objects)


# ---------------------------------------------------------------------------------------------
# Situation keys

_M1, _M2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)
_SEEDS = (np.uint32(0x9E3779B9), np.uint32(0x85EBCA6B))


def _rotl(x, r):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _fmix(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _murmur3(words: jax.Array, seed: np.uint32) -> jax.Array:
    """MurmurHash3 (x86, 32-bit) of a vector of 32-bit words; unrolled, batch-friendly."""
    h = jnp.full(words.shape[:-1], seed, jnp.uint32)
    for n in range(words.shape[-1]):
        k = words[..., n] * _M1
        k = _rotl(k, 15) * _M2
        h = _rotl(h ^ k, 13) * np.uint32(5) + np.uint32(0xE6546B64)
    return _fmix(h ^ np.uint32(4 * words.shape[-1]))


def percept_words(mission: jax.Array, p: Percept) -> jax.Array:
    """The integers a situation key hashes: mission, walls, carried object, object slots."""
    parts = [mission.astype(jnp.int32), p.walls, p.carrying, p.objects.reshape(p.objects.shape[:-2] + (-1,))]
    return jnp.concatenate(parts, axis=-1)


def situation_key(mission: jax.Array, p: Percept) -> jax.Array:
    """Deterministic 64-bit key ``uint32[2]`` of (mission, percept): two seeded MurmurHash3 lanes.

    Equal text means equal key (the percept holds exactly what the text says, in its order).
    Treating keys as uniform 64-bit values, the chance that any two of ``n`` distinct situations
    collide is about ``n**2 / 2**65``: ~2.7e-8 for ``n = 1e6``.
    """
    words = jax.lax.bitcast_convert_type(percept_words(mission, p), jnp.uint32)
    return jnp.stack([_murmur3(words, s) for s in _SEEDS], axis=-1)
