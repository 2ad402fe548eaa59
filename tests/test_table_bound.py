"""A bounded hint table in the real loop: rows, teacher caches and oracle books stay within
``table_max_rows``; evictions are counted; a resumed run equals an uninterrupted one."""

import math

import numpy as np
import pytest

from bidijax import config as cfg
from bidijax import hints, rundir
from bidijax.loop import TIMING_COLUMNS, train

LIMIT = 64
PPO = dict(num_envs=8, num_steps=8, num_minibatches=2, update_epochs=1, hidden=16, miss_buffer_size=64)


def bounded(**kw) -> cfg.TrainConfig:
    base = cfg.with_preset(cfg.TrainConfig(), "default", PPO)
    teacher = cfg.TeacherConfig(name="default", score_batch_size=32, finetune=cfg.FinetuneConfig(steps=1, batch_size=16, rescore_budget=16))
    return base.replace(
        env_id="BabyAI-GoToLocal-v0", arm="bidirectional", teacher=teacher, iterations=3, num_seeds=2,
        table_capacity=16, table_max_rows=LIMIT, checkpoint_every=2, eval_every=3, eval_episodes=2, **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bounded") / "run")
    state, rows = train(bounded(), d)
    return d, state, rows


def test_table_teacher_and_book_stay_bounded(run):
    _, state, rows = run
    assert max(r["table_rows"] for r in rows) <= LIMIT
    assert sum(r["table_evicted"] for r in rows) > 0  # GoToLocal: situations rarely repeat
    for i, table in enumerate(state.tables):
        assert table.capacity <= LIMIT
        assert len(state.books[i]) <= LIMIT
        assert len(state.teachers.prompts[i]) <= LIMIT and len(state.teachers.ref_logp[i]) <= LIMIT
        # what the teacher and the book keep is exactly / at most the table's rows
        keys = set(hints.key64(hints.rows(table)[0]).tolist())
        assert set(state.teachers.prompts[i]) == keys and set(state.books[i]) <= keys
    ids = {k for p in state.teachers.prompts for k in p}
    assert set(state.teachers._ids) == ids  # token ids of forgotten prompts are dropped too


def test_resume_of_a_bounded_run_is_exact(run, tmp_path):
    """Killed after its checkpoint at iteration 2 (row stamps, forgotten caches and books in it),
    the run resumes to the same metrics as the uninterrupted one."""
    d, _, _ = run
    other = str(tmp_path / "run")

    def stop(rows, state):
        if state.iteration == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(bounded(), other, on_iteration=stop)
    train(bounded(), other, resume=True)
    full, again = rundir.read_metrics(d), rundir.read_metrics(other)
    assert len(again) == len(full) == 6
    for a, b in zip(full, again):
        for k in a:
            if k in TIMING_COLUMNS:
                continue
            x, y = float(a[k]), float(b[k])
            assert (math.isnan(x) and math.isnan(y)) or x == y, (k, a["iteration"], x, y)
