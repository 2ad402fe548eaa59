"""bidijax: JAX-native RL students trained together with language-model teachers.

Importing ``bidijax`` is cheap: subpackages (``bidijax.envs``, ...) load JAX and navix only
when first used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
_SUBMODULES = ("envs", "hints", "feedback", "student")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'bidijax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
