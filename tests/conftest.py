import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))

import pytest

# One persistent XLA compilation cache for the whole test session, set before anything imports
# JAX, and inherited by the runs the tests start in subprocesses (kill/resume, several processes,
# SLURM, sweeps): they compile the same student programs, which then load from disk instead of
# compiling again (a fresh directory per session: nothing carries over between sessions).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bidijax-test-xla-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
else:
    _CACHE = None


def pytest_sessionfinish(session, exitstatus):
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)


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
