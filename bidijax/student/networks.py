"""Actor-critic networks (flax linen) for dict (BabyAI) and array observations."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..envs import constants as C

_ORTHO = nn.initializers.orthogonal


def _dense(features: int, scale: float = np.sqrt(2)) -> nn.Dense:
    return nn.Dense(features, kernel_init=_ORTHO(scale), bias_init=nn.initializers.zeros)


class GridEncoder(nn.Module):
    """MiniGrid egocentric image + direction + mission integers -> feature vector.

    Every code is one-hot encoded (cell object / colour / state, direction, mission task /
    colour / type / article) and the concatenation goes through one dense layer. Matmuls only:
    on CPU its gradient is ~10x faster than embeddings + convolutions (scatters and small convs).
    """

    hidden: int = 64

    @nn.compact
    def __call__(self, obs: dict) -> jax.Array:
        image = obs["image"].astype(jnp.int32)
        mission = obs["mission"].astype(jnp.int32)
        parts = [
            jax.nn.one_hot(image[..., 0], len(C.OBJECT_NAMES)),
            jax.nn.one_hot(image[..., 1], len(C.COLOR_NAMES)),
            jax.nn.one_hot(image[..., 2], len(C.STATE_NAMES)),
        ]
        cells = jnp.concatenate(parts, axis=-1).reshape(-1)
        extra = [
            jax.nn.one_hot(obs["direction"], 4),
            jax.nn.one_hot(mission[0], C.NUM_TASKS),
            jax.nn.one_hot(mission[1], len(C.COLOR_NAMES)),
            jax.nn.one_hot(mission[2], len(C.OBJECT_NAMES)),
            jax.nn.one_hot(mission[3], 2),
        ]
        x = jnp.concatenate([cells] + extra, axis=-1)
        return nn.relu(_dense(self.hidden)(x))


class ActorCritic(nn.Module):
    """Separate actor and critic torsos (PureJaxRL style) over a shared observation encoder.

    Applied to one observation; ``jax.vmap`` it over batches.
    """

    num_actions: int
    hidden: int = 64

    @nn.compact
    def __call__(self, obs) -> tuple[jax.Array, jax.Array]:
        if isinstance(obs, dict):
            x = GridEncoder(self.hidden)(obs)
        else:
            x = obs.reshape(-1).astype(jnp.float32)
        a = nn.tanh(_dense(self.hidden)(x))
        a = nn.tanh(_dense(self.hidden)(a))
        logits = _dense(self.num_actions, 0.01)(a)
        v = nn.tanh(_dense(self.hidden)(x))
        v = nn.tanh(_dense(self.hidden)(v))
        value = _dense(1, 1.0)(v)[..., 0]
        return logits, value

