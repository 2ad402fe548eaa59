"""The PPO student: config, networks and the jitted ``make_train``."""

from .config import HINT_MODES, TRACED, PPOConfig
from .evaluate import EVAL_COLUMNS, eval_key, make_evaluate
from .networks import ActorCritic
from .ppo import Hyper, Rollout, RunnerState, Train, gae, hyper_of, make_train
from .seeds import lane_devices, seed_mesh, shard_seeds, vmap_seeds

__all__ = ["EVAL_COLUMNS", "HINT_MODES", "TRACED", "Hyper", "hyper_of", "lane_devices", "ActorCritic", "eval_key", "make_evaluate", "PPOConfig", "Rollout", "RunnerState", "Train", "gae", "make_train", "seed_mesh", "shard_seeds", "vmap_seeds"]
