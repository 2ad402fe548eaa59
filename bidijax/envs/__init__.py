"""Environments: BabyAI GoTo levels on navix, percepts, situation keys, text and the BFS oracle."""

from . import constants
from .babyai import BabyAIGoTo, BabyAIState
from .gymnax_adapter import GymnaxEnv, from_gymnax
from .oracle import oracle_actions, oracle_distance, oracle_probs
from .perception import Percept, percept, percept_from_image, situation_key
from .registry import BABYAI_LEVELS, env_ids, make
from .scene import Scene, mission_of, scene_of
from .text import describe, mission_text, prompt
from .view import egocentric_view

__all__ = [
    "BABYAI_LEVELS",
    "BabyAIGoTo",
    "BabyAIState",
    "Percept",
    "Scene",
    "constants",
    "describe",
    "egocentric_view",
    "env_ids",
    "from_gymnax",
    "GymnaxEnv",
    "make",
    "mission_of",
    "mission_text",
    "oracle_actions",
    "oracle_distance",
    "oracle_probs",
    "percept",
    "percept_from_image",
    "prompt",
    "scene_of",
    "situation_key",
]
