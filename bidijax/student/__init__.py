"""The PPO student: config, networks and the jitted ``make_train``.

Names load on first use (``bidijax.student.config`` stays free of JAX and navix), so that reading
a config never starts JAX's backend: ``jax.distributed.initialize`` (``bidijax.multihost``) must
come first in a run of several processes.
"""

from __future__ import annotations

from bidijax.lazy import lazy_names

_WHERE = {
    "HINT_MODES": "config", "TRACED": "config", "PPOConfig": "config",
    "EVAL_COLUMNS": "evaluate", "eval_key": "evaluate", "make_evaluate": "evaluate",
    "ActorCritic": "networks",
    "Hyper": "ppo", "Rollout": "ppo", "RunnerState": "ppo", "Train": "ppo", "gae": "ppo", "hyper_of": "ppo", "make_train": "ppo",
    "device_grid": "seeds", "seed_mesh": "seeds", "shard_runners": "seeds", "shard_seeds": "seeds", "vmap_seeds": "seeds",
}  # fmt: skip

__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
