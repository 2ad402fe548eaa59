"""What crosses the JAX/torch seam, named: the situations a teacher scores and the hint rows it
returns, and the two interfaces every teacher implements (numpy only; no JAX or torch here).

- ``ScoreRequest``: one seed's missed situations (``keys uint32[N, 2]``, ``missions``,
  ``percepts``, the BFS oracle's optimal actions ``bool[N, A]`` or ``None``).
- ``HintRows``: hint rows for ``hints.merge`` (``keys uint32[N, 2]``, ``probs float32[N, A]``).
- ``Teacher``: one seed's teacher (``HFTeacher``, ``ScriptedTeacher``).
- ``Teachers``: every seed's teachers behind one batched call per phase (``teaching.PerSeed``
  over ``Teacher`` objects; ``GPT2Teachers``, one JAX program for all seeds): each method takes
  and returns one entry per seed, ``None`` where a seed has nothing to do.

Both messages are named tuples, so ``keys, probs = rows`` still reads them.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np


class ScoreRequest(NamedTuple):
    """One seed's situations to score."""

    keys: np.ndarray  # uint32 [N, 2]
    missions: np.ndarray  # the mission of each situation (``envs.scene.mission_of``)
    percepts: Any  # ``envs.perception.Percept`` with a leading [N] axis
    oracle: np.ndarray | None = None  # bool [N, A]: optimal actions (scripted teachers need them)


class HintRows(NamedTuple):
    """A teacher's answer: the probabilities of every action in each situation."""

    keys: np.ndarray  # uint32 [N, 2]
    probs: np.ndarray  # float32 [N, A], rows summing to 1


@runtime_checkable
class Teacher(Protocol):
    """One seed's teacher. ``version`` grows with each fine-tuning update that changed it."""

    version: int

    def score(self, keys, missions, percepts, oracle=None) -> HintRows:
        """Rows for every given situation."""

    def update(self, feedback, keys) -> dict:
        """Learn from the student's feedback (``bidijax.feedback.Feedback``, row ``k`` = ``keys[k]``);
        returns statistics (``loss``, ``kl``, ``steps``, ...; empty for a teacher that never learns)."""

    def rescore(self, keys) -> HintRows:
        """Rows for the given situations already known to the teacher (the others left out)."""

    def forget(self, keys) -> None:
        """Drop what the teacher keeps about these situations (evicted from the table)."""

    def save(self, directory: str) -> None: ...

    def load(self, directory: str) -> None: ...


@runtime_checkable
class Teachers(Protocol):
    """Every seed's teachers: one entry per seed in and out."""

    @property
    def versions(self) -> list[int]: ...

    def __len__(self) -> int: ...

    def score(self, requests: list[ScoreRequest | None]) -> list[HintRows | None]: ...

    def update(self, items: list[tuple[Any, np.ndarray] | None]) -> list[dict]: ...

    def rescore(self, keys: list[np.ndarray]) -> list[HintRows]: ...

    def forget(self, keys: list[np.ndarray]) -> None: ...

    def save(self, i: int, directory: str) -> None: ...

    def load(self, i: int, directory: str) -> None: ...
