"""Actor-critic networks (flax linen) for dict (BabyAI) and array observations."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..envs import constants as C

_ORTHO = nn.initializers.orthogonal


def _dense(features: int, scale: float = np.sqrt(2), name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=_ORTHO(scale), bias_init=nn.initializers.zeros, name=name)


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


class DenseParams(nn.Module):
    """The kernel and bias of a ``_dense`` layer, returned rather than applied."""

    in_features: int
    features: int
    scale: float = np.sqrt(2)

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", _ORTHO(self.scale), (self.in_features, self.features))
        return kernel, self.param("bias", nn.initializers.zeros, (self.features,))


class ActorCritic(nn.Module):
    """Separate actor and critic torsos (PureJaxRL style) over a shared observation encoder.

    Applied to one observation; ``jax.vmap`` it over batches. The first layers of the actor
    (``Dense_0``) and of the critic (``Dense_3``) keep their own parameters (and initialisation)
    but run as one matmul of their concatenated kernels: in the PPO epochs, one weight gradient
    ``x^T [dy_actor, dy_critic]`` costs ~35% less than two on the CPU.
    """

    num_actions: int
    hidden: int = 64

    @nn.compact
    def __call__(self, obs) -> tuple[jax.Array, jax.Array]:
        if isinstance(obs, dict):
            x = GridEncoder(self.hidden)(obs)
        else:
            x = obs.reshape(-1).astype(jnp.float32)
        h = self.hidden
        ka, ba = DenseParams(x.shape[-1], h, name="Dense_0")()
        kc, bc = DenseParams(x.shape[-1], h, name="Dense_3")()
        first = nn.tanh(x @ jnp.concatenate([ka, kc], 1) + jnp.concatenate([ba, bc]))
        a = nn.tanh(_dense(h, name="Dense_1")(first[..., :h]))
        logits = _dense(self.num_actions, 0.01, name="Dense_2")(a)
        v = nn.tanh(_dense(h, name="Dense_4")(first[..., h:]))
        value = _dense(1, 1.0, name="Dense_5")(v)[..., 0]
        return logits, value

