"""Long runs keep device memory flat: the number of live JAX arrays does not grow with iterations
(issue 15, "Long runs"; ``benchmarks/memory_growth.py`` measures RSS and arrays over 500 iterations).

The count is deterministic; it depends only on where in the cycle of checkpoints and evaluations
an iteration falls (after a checkpoint one copy of the student lives until the next iteration).
RSS and wall time are noisy and are not asserted here.
"""

import gc
import math

import jax

from bidijax.loop import train
from test_loop import tiny

PERIOD = 5  # checkpoints and evaluations every 5 iterations


def test_live_arrays_stay_flat(tmp_path):
    config = tiny("bidirectional", "noisy_oracle").replace(iterations=30, checkpoint_every=PERIOD, eval_every=PERIOD)
    counts, seen = {}, []

    def on_iteration(rows, state):
        gc.collect()
        counts[state.iteration] = len(jax.live_arrays())
        seen.extend(rows)

    _, rows = train(config, str(tmp_path / "run"), on_iteration=on_iteration)
    # the rows are not kept in memory during the run: read back from metrics.csv, exactly as produced
    assert len(rows) == len(seen) == 30 * config.num_seeds
    for a, b in zip(rows, seen):
        assert a.keys() == b.keys()
        for k in a:
            assert type(a[k]) is type(b[k]) and (a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k]))), (k, a[k], b[k])
    # after the first cycles (table growth recompiles) every iteration holds as many arrays as
    # the same point of the previous cycle: nothing accumulates per iteration
    late = range(2 * PERIOD + 1, 31)
    assert [counts[i] for i in late] == [counts[i - PERIOD] for i in late], counts
    assert max(counts[i] for i in late) == max(counts[i] for i in range(PERIOD + 1, 2 * PERIOD + 1)), counts
