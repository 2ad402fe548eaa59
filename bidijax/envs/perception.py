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
    # slot k holds the k-th object cell in order (49 when there is none): the first entries of
    # the sorted cell indices, non-object cells counting as 49 (a short sort is fast on CPU)
    n = flat.shape[0]
    idx = jnp.sort(jnp.where(is_obj, jnp.arange(n), n))
    idx = idx[:max_objects] if max_objects <= n else jnp.pad(idx, (0, max_objects - n), constant_values=n)
    i, j = idx // C.VIEW, idx % C.VIEW
    cell = jnp.concatenate([flat, jnp.zeros((1, 3), jnp.int32)])[idx]
    valid = idx < flat.shape[0]
    state = jnp.where(cell[:, 0] == C.DOOR, cell[:, 2], 0)
    objects = jnp.stack([cell[:, 0], cell[:, 1], state, vy - j, i - vx], axis=-1) * valid[:, None]
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

_SEEDS = (np.uint32(0x9E3779B9), np.uint32(0x85EBCA6B))
_GOLDEN = np.uint32(0x9E3779B9)


def _fmix(h):
    """MurmurHash3's 32-bit finaliser: a bijective avalanche mix."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _hash_lane(words: jax.Array, seed: np.uint32) -> jax.Array:
    """32-bit hash of a word vector: the sum of position-keyed mixes of every word, mixed again.

    Every (position, value) pair maps to a pseudo-random 32-bit term, so two different vectors
    collide with probability ~2**-32 per lane; vectorised (no sequential chain), cheap to run
    and to compile.
    """
    pos = (jnp.arange(words.shape[-1], dtype=jnp.uint32) + np.uint32(1)) * _GOLDEN + seed
    terms = _fmix(_fmix(words ^ seed) + pos)
    return _fmix(jnp.sum(terms, axis=-1, dtype=jnp.uint32) ^ np.uint32(words.shape[-1]))


def percept_words(mission: jax.Array, p: Percept) -> jax.Array:
    """The integers a situation key hashes: mission, walls, carried object, object slots."""
    parts = [mission.astype(jnp.int32), p.walls, p.carrying, p.objects.reshape(p.objects.shape[:-2] + (-1,))]
    return jnp.concatenate(parts, axis=-1)


def situation_key(mission: jax.Array, p: Percept) -> jax.Array:
    """Deterministic 64-bit key ``uint32[2]`` of (mission, percept): two independently seeded lanes.

    Equal text means equal key (the percept holds exactly what the text says, in its order).
    Treating keys as uniform 64-bit values, the chance that any two of ``n`` distinct situations
    collide is about ``n**2 / 2**65``: ~2.7e-8 for ``n = 1e6``.
    """
    words = jax.lax.bitcast_convert_type(percept_words(mission, p), jnp.uint32)
    return jnp.stack([_hash_lane(words, s) for s in _SEEDS], axis=-1)
