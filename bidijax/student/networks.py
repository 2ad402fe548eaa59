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
    """MiniGrid egocentric image + mission integers -> feature vector.

    Each cell's (object, colour, state) codes are embedded and summed, then two small
    convolutions; the mission's (task, colour, type, article) integers are embedded and summed.
    """

    hidden: int = 64

    @nn.compact
    def __call__(self, obs: dict) -> jax.Array:
        image = obs["image"].astype(jnp.int32)
        emb = nn.Embed(len(C.OBJECT_NAMES), 16)(image[..., 0])
        emb += nn.Embed(len(C.COLOR_NAMES), 16)(image[..., 1])
        emb += nn.Embed(len(C.STATE_NAMES), 16)(image[..., 2])
        x = nn.relu(nn.Conv(32, (2, 2))(emb))
        x = nn.relu(nn.Conv(32, (2, 2), strides=(2, 2))(x))
        x = x.reshape(-1)
        m = obs["mission"].astype(jnp.int32)
        mission = nn.Embed(8, 16)(m[..., 0]) + nn.Embed(len(C.COLOR_NAMES), 16)(m[..., 1])
        mission += nn.Embed(len(C.OBJECT_NAMES), 16)(m[..., 2]) + nn.Embed(2, 16)(m[..., 3])
        return nn.relu(_dense(self.hidden)(jnp.concatenate([x, mission], axis=-1)))


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

