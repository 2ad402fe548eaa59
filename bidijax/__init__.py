"""bidijax: JAX-native RL students trained together with language-model teachers.

Importing ``bidijax`` is cheap: subpackages (``bidijax.envs``, ...) load JAX and navix only
when first used.
"""

from __future__ import annotations

from bidijax.lazy import lazy_names

__version__ = "0.1.0"
__getattr__, __dir__ = lazy_names(__name__, {name: "" for name in ("envs", "hints", "feedback", "student")}, globals())
