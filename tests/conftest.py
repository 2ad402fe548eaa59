import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test module, drop JAX's compiled programs and the loop's cached student
    functions: one pytest process compiles hundreds of XLA programs, and keeping them all alive
    grows memory across the suite (a CI run crashed once inside XLA's CPU compiler late in the
    suite). Modules share compiled functions through module-scoped fixtures, as before."""
    yield
    import jax

    from bidijax import loop

    loop._compiled.cache_clear()
    jax.clear_caches()
