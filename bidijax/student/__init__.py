"""The PPO student: config, networks and the jitted ``make_train``."""

from .config import HINT_MODES, PPOConfig
from .networks import ActorCritic
from .ppo import Rollout, RunnerState, Train, gae, make_train
from .seeds import seed_mesh, shard_seeds, vmap_seeds

__all__ = ["HINT_MODES", "ActorCritic", "PPOConfig", "Rollout", "RunnerState", "Train", "gae", "make_train", "seed_mesh", "shard_seeds", "vmap_seeds"]
