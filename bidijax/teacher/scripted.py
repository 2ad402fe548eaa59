"""Scripted teachers for controlled ablations: ``oracle``, ``noisy_oracle(eps)``, ``uniform``.

They answer from the BFS oracle's optimal actions at the state where a situation was first met
(computed in JAX inside the student's rollout and carried by the miss buffer, ``MissBuffer.oracle``),
so teacher quality can be varied exactly, which no language model allows.

* ``oracle``: uniform over the optimal actions (uniform over all actions when there are none).
* ``noisy_oracle(eps)``: each situation independently, with probability ``eps``, gets the uniform
  distribution over all actions instead of the oracle's; the draw is a deterministic function of
  the situation key and the teacher's seed, so a situation always gets the same hint.
* ``uniform``: the uniform distribution everywhere (a teacher that knows nothing).

Same interface as ``HFTeacher`` (``score``, ``update``, ``rescore``, ``save``, ``load``), but
scripted teachers do not learn: ``update`` is a no-op and ``rescore`` returns
no rows (their hints never change, so there is nothing to refresh).
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np

from ..envs import constants as C
from ..envs.oracle import oracle_probs
from ..hints import key64
from .protocol import HintRows

SCRIPTED = ("oracle", "noisy_oracle", "uniform")


def _unit_interval(keys: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic uniform number in [0, 1) per ``uint32[N, 2]`` key (SplitMix64 of key ^ seed)."""
    x = key64(keys)
    with np.errstate(over="ignore"):
        x = x ^ (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class ScriptedTeacher:
    """A fixed teacher computed from the oracle's optimal actions (see the module docstring)."""

    def __init__(self, kind: str = "oracle", eps: float = 0.0, seed: int = 0, num_actions: int = C.NUM_ACTIONS):
        if kind not in SCRIPTED:
            raise ValueError(f"scripted teacher {kind!r} is not one of {SCRIPTED}")
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"noisy_oracle eps={eps} must lie in [0, 1]")
        self.kind, self.eps, self.seed, self.num_actions = kind, float(eps), int(seed), num_actions
        self.version = 0

    def score(self, keys, missions=None, percepts=None, oracle=None) -> HintRows:
        """Rows ``(keys uint32[N, 2], probs float32[N, A])`` for ``hints.merge``.

        ``oracle``: bool ``[N, A]`` optimal actions per situation (``MissBuffer.oracle``).
        """
        keys = np.asarray(keys, np.uint32).reshape(-1, 2)
        n, a = len(keys), self.num_actions
        uniform = np.full((n, a), 1.0 / a, np.float32)
        if self.kind == "uniform":
            return HintRows(keys, uniform)
        if oracle is None:
            raise ValueError(f"the {self.kind} teacher needs the oracle's actions; track the oracle in the student")
        probs = np.asarray(oracle_probs(jnp.asarray(oracle, bool)), np.float32)
        if self.kind == "noisy_oracle" and self.eps > 0:
            noisy = _unit_interval(keys, self.seed) < self.eps
            probs = np.where(noisy[:, None], uniform, probs)
        return HintRows(keys, probs)

    def update(self, feedback=None, keys=None) -> dict:
        """Same signature as ``HFTeacher.update``; scripted teachers do not learn: empty statistics."""
        return {}

    def rescore(self, keys) -> HintRows:
        """No rows: the hints of a scripted teacher never change, so nothing needs re-scoring."""
        return HintRows(np.zeros((0, 2), np.uint32), np.zeros((0, self.num_actions), np.float32))

    def forget(self, keys) -> None:
        """Nothing to forget: a scripted teacher keeps nothing per situation."""

    def save(self, directory: str) -> None:
        """Write the state (``state_dict``) to ``directory/teacher.json``."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "teacher.json"), "w") as f:
            json.dump(self.state_dict(), f)

    def load(self, directory: str) -> None:
        """Restore, in place, a state written by ``save``."""
        try:
            with open(os.path.join(directory, "teacher.json")) as f:
                state = json.load(f)
        except (OSError, ValueError) as err:
            raise ValueError(f"no scripted teacher state in {directory!r}: {type(err).__name__}") from None
        self.load_state_dict(state)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "eps": self.eps, "seed": self.seed, "version": self.version}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") not in SCRIPTED:
            raise ValueError(f"not a scripted teacher state (kind {state.get('kind')!r}; allowed: {', '.join(SCRIPTED)})")
        self.kind, self.eps, self.seed = state["kind"], float(state["eps"]), int(state["seed"])
        self.version = int(state["version"])


def oracle(seed: int = 0) -> ScriptedTeacher:
    return ScriptedTeacher("oracle", seed=seed)


def noisy_oracle(eps: float, seed: int = 0) -> ScriptedTeacher:
    return ScriptedTeacher("noisy_oracle", eps=eps, seed=seed)


def uniform(seed: int = 0) -> ScriptedTeacher:
    return ScriptedTeacher("uniform", seed=seed)
