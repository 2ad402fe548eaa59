"""Student -> teacher feedback, aggregated on device per (hint-table row, action taken).

For every real step of a rollout the student's critic gives a TD error
``r + gamma * V(s') * (1 - terminal) - V(s)`` and a GAE advantage. ``aggregate`` sums them per
(table row, action) with ``segment_sum`` into small ``[K, A]`` arrays (sums and counts) plus per-row visit counts; only these leave the device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from typing import Any


class Feedback(struct.PyTreeNode):
    td_sum: jax.Array  # float32[K, A]
    adv_sum: jax.Array  # float32[K, A]
    count: jax.Array  # float32[K, A]: real steps with that (situation, action)
    visits: jax.Array  # float32[K]: real steps in that situation
    misses: Any = None  # hints.MissBuffer of the update, when the student reads a table


def aggregate(rows, actions, td, adv, mask, capacity: int, num_actions: int) -> Feedback:
    """Sum per-step ``td`` / ``adv`` into ``[capacity, num_actions]`` arrays.

    ``rows``: table row of each step's situation (``capacity`` for a miss, which is dropped);
    ``mask``: steps that count (real transitions). All inputs share one leading shape.
    """
    rows, actions = rows.reshape(-1), actions.reshape(-1)
    w = (mask.reshape(-1) & (rows < capacity)).astype(jnp.float32)
    seg = jnp.where(w > 0, rows * num_actions + actions, capacity * num_actions)
    n = capacity * num_actions + 1
    s = lambda x: jax.ops.segment_sum(x.reshape(-1) * w, seg, num_segments=n)[:-1].reshape(capacity, num_actions)
    td, adv = td.astype(jnp.float32), adv.astype(jnp.float32)
    count = s(jnp.ones_like(td))
    return Feedback(
        td_sum=s(td),
        adv_sum=s(adv),
        count=count,
        visits=count.sum(axis=1),
    )

