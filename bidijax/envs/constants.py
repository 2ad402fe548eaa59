"""MiniGrid / BabyAI integer encodings shared by every environment module.

The numbers are MiniGrid's own (``minigrid.core.constants``), which navix also uses for its
entity tags and colour palette, so a cell encoded here is byte-identical to MiniGrid's
``Grid.encode`` output.
"""

from __future__ import annotations

import numpy as np

OBJECT_NAMES = ("unseen", "empty", "wall", "floor", "door", "key", "ball", "box", "goal", "lava", "agent")
OBJECT_TO_IDX = {name: i for i, name in enumerate(OBJECT_NAMES)}
UNSEEN, EMPTY, WALL, FLOOR, DOOR, KEY, BALL, BOX, GOAL, LAVA, AGENT = range(11)

COLOR_NAMES = ("red", "green", "blue", "purple", "yellow", "grey")
COLOR_TO_IDX = {name: i for i, name in enumerate(COLOR_NAMES)}
RED, GREEN, BLUE, PURPLE, YELLOW, GREY = range(6)

STATE_NAMES = ("open", "closed", "locked")
OPEN, CLOSED, LOCKED = range(3)

#: The 7-action MiniGrid action set, in MiniGrid's order.
ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
#: The action strings of BabyAI-Text / Lamorel, aligned with ``ACTION_NAMES``.
ACTION_STRINGS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle", "done")
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE, DONE = range(7)
NUM_ACTIONS = 7

#: Unit steps per direction as (row, col): 0 = east, 1 = south, 2 = west, 3 = north.
DIR_VEC = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]], dtype=np.int32)

#: Egocentric view size (MiniGrid's ``agent_view_size``) and the agent's cell in it.
VIEW = 7
AGENT_VX, AGENT_VY = VIEW // 2, VIEW - 1

#: Mission task ids (first mission integer); see ``bidijax.envs.text.mission_text``.
TASK_GOTO, TASK_GOAL, TASK_DOORKEY, TASK_OTHER = range(4)
NUM_TASKS = 4
#: Mission article (last mission integer): "the" when one object matches, "a" when several do.
ARTICLE_THE, ARTICLE_A = 0, 1
