"""Host-side BabyAI-Text rendering of missions and percepts, and the Lamorel prompt.

Pure numpy: works on ``Percept`` arrays fetched from the device, one situation or a batch.
"""

from __future__ import annotations

import numpy as np

from . import constants as C
from .perception import Percept

_MISSIONS = {
    C.TASK_GOAL: "get to the green goal square",
    C.TASK_DOORKEY: "use the key to open the door and then get to the goal",
}


def mission_text(mission) -> str:
    """Render mission integers ``(task, colour, type, article)`` as BabyAI's text."""
    task, colour, obj, article = (int(x) for x in np.asarray(mission).reshape(-1)[:4])
    if task == C.TASK_GOTO:
        det = "a" if article == C.ARTICLE_A else "the"
        return f"go to {det} {C.COLOR_NAMES[colour]} {C.OBJECT_NAMES[obj]}"
    if task in _MISSIONS:
        return _MISSIONS[task]
    return f"task {task}"


def _steps(n: int, where: str) -> str:
    return f"{n} step{'s' if n > 1 else ''} {where}"


def _object_phrase(obj: int, colour: int, state: int) -> str:
    name = f"{C.COLOR_NAMES[colour]} {C.OBJECT_NAMES[obj]}"
    if obj == C.DOOR:
        st = C.STATE_NAMES[state]
        return f"{'an' if st == 'open' else 'a'} {st} {name}"
    return f"a {name}"


def descriptions(p: Percept) -> list[str]:
    """The list of BabyAI-Text sentences for one (unbatched) percept."""
    walls = np.asarray(p.walls)
    objects = np.asarray(p.objects)
    carrying = np.asarray(p.carrying)
    out = []
    if carrying[0] > 0:
        out.append(f"You carry a {C.COLOR_NAMES[carrying[1]]} {C.OBJECT_NAMES[carrying[0]]}")
    for dist, where in zip(walls, ("forward", "left", "right")):
        if dist > 0:
            out.append(f"You see a wall {_steps(int(dist), where)}")
    for obj, colour, state, fwd, right in objects:
        if obj == 0:
            continue
        parts = []
        if right != 0:
            parts.append(_steps(abs(int(right)), "right" if right > 0 else "left"))
        if fwd != 0:
            parts.append(_steps(int(fwd), "forward"))
        out.append(f"You see {_object_phrase(int(obj), int(colour), int(state))} " + " and ".join(parts))
    return out


def _unbatch(mission, p: Percept):
    mission = np.asarray(mission)
    if mission.ndim == 1:
        return [mission], [p]
    walls, objects, carrying = np.asarray(p.walls), np.asarray(p.objects), np.asarray(p.carrying)
    overflow = np.asarray(p.overflow)
    items = [Percept(walls=walls[b], objects=objects[b], carrying=carrying[b], overflow=overflow[b]) for b in range(len(mission))]
    return list(mission), items


def describe(mission, p: Percept) -> str | list[str]:
    """BabyAI-Text observation (sentences joined by ", "); a list of strings for a batch."""
    missions, percepts = _unbatch(mission, p)
    texts = [", ".join(descriptions(q)) for q in percepts]
    return texts if np.asarray(mission).ndim > 1 else texts[0]


def prompt(mission, p: Percept) -> str | list[str]:
    """Lamorel's prompt ``Goal of the agent: ...\\nObservation: ...\\nAction:`` (batched like ``describe``)."""
    missions, percepts = _unbatch(mission, p)
    texts = [
        f"Goal of the agent: {mission_text(m)}\nObservation: {', '.join(descriptions(q))}\nAction:"
        for m, q in zip(missions, percepts)
    ]
    return texts if np.asarray(mission).ndim > 1 else texts[0]
