"""The bi-directional loop and ``bidijax train``: arms end to end, resume, seeds, CLI, plot, render."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bidijax import config as cfg
from bidijax import rundir, teaching
from bidijax.cli import main
from bidijax.envs import constants as C
from helpers import one_line_error
from bidijax.loop import TIMING_COLUMNS, train

TINY_PPO = dict(num_envs=8, num_steps=16, num_minibatches=2, update_epochs=1, hidden=16, miss_buffer_size=128)
TINY_FINETUNE = dict(steps=1, batch_size=16, rescore_budget=16)


def tiny(arm="one_way", teacher="oracle", **kw) -> cfg.TrainConfig:
    base = cfg.with_preset(cfg.TrainConfig(), "default", TINY_PPO)
    t = cfg.TeacherConfig(name=teacher, score_batch_size=32, finetune=cfg.FinetuneConfig(**TINY_FINETUNE))
    return base.replace(arm=arm, teacher=t, iterations=2, num_seeds=2, table_capacity=16, checkpoint_every=1, **kw)


def cli_flags(c: cfg.TrainConfig) -> list[str]:
    flags = [f"--arm={c.arm}", f"--teacher={c.teacher.name}", f"--iterations={c.iterations}"]
    flags += [f"--num-seeds={c.num_seeds}", f"--table-capacity={c.table_capacity}", f"--checkpoint-every={c.checkpoint_every}"]
    flags += [f"--ppo.{k.replace('_', '-')}={v}" for k, v in TINY_PPO.items()]
    flags += [f"--teacher.finetune.{k.replace('_', '-')}={v}" for k, v in TINY_FINETUNE.items()]
    flags += ["--teacher.score-batch-size=32"]
    return flags


def comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def stopped_after_first(config, run_dir: str) -> None:
    """Train ``config`` into ``run_dir`` and stop it after the first iteration (and its checkpoint),
    as a kill would: the interrupted run that a resume test continues."""

    def stop(rows, state):
        raise KeyboardInterrupt

    try:
        train(config, run_dir, on_iteration=stop)
    except KeyboardInterrupt:
        pass


def same_rows(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(comparable(a), comparable(b)):
        assert ra.keys() == rb.keys()
        for k in ra:
            x, y = float(ra[k]), float(rb[k])
            assert (math.isnan(x) and math.isnan(y)) or x == y, (k, ra[k], rb[k])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two iterations of every arm (default LM teacher where it learns), in run directories."""
    out = {}
    for arm, teacher in (("ppo", "oracle"), ("one_way", "noisy_oracle"), ("bidirectional", "default"), ("teacher_only", "default")):
        d = str(tmp_path_factory.mktemp(arm) / "run")
        state, rows = train(tiny(arm, teacher), d)
        out[arm] = (d, state, rows)
    return out


@pytest.mark.parametrize("arm", ["ppo", "one_way", "bidirectional", "teacher_only"])
def test_arm_end_to_end(runs, arm):
    d, state, rows = runs[arm]
    assert state.iteration == 2 and len(rows) == 4  # 2 iterations x 2 seeds
    on_disk = rundir.read_metrics(d)
    same_rows(on_disk, [{k: str(v) for k, v in r.items()} for r in rows])
    assert rundir.latest_checkpoint(d).endswith("it-000002")
    saved = cfg.from_dict(rundir.read_config(d))
    assert saved.arm == arm and saved.ppo.hint_mode == cfg.arm_hint_mode(arm)
    last = [r for r in rows if r["iteration"] == 2]
    assert all(r["frames"] == 2 * 8 * 16 for r in last)
    # the student alone is evaluated at the last iteration (eval_every=5 > 2 iterations) only
    assert all(math.isnan(r["eval_success"]) for r in rows if r["iteration"] == 1)
    assert all(0 <= r[k] <= 1 for r in last for k in ("eval_success", "eval_greedy_success", "eval_return"))
    if arm == "ppo":
        assert len(state.teachers) == 0 and all(math.isnan(r["hint_coverage"]) for r in rows)
        return
    # the warm-up scored the first rollout's situations, so iteration 1 already has hints (in
    # teacher_only the behaviour changes once the table is filled, so it meets new situations)
    first = [r for r in rows if r["iteration"] == 1]
    assert all(r["hint_coverage"] > (0.1 if arm == "teacher_only" else 0.5) for r in first)
    # score_first (the default): each update's new situations are scored before its epochs, so
    # the student learns with a hint on every step; acting found only what the table knew
    assert all(r["hint_coverage"] == 1.0 and r["misses"] == 0 for r in rows)
    assert all(r["acting_coverage"] <= 1.0 for r in rows) and any(r["acting_coverage"] < 1.0 for r in rows)
    if arm != "teacher_only":  # distill: no warm-up; every row of the table was scored first
        for seed in (0, 1):
            mine = [r for r in rows if r["seed"] == seed]
            assert mine[-1]["table_rows"] == sum(r["scored_first"] for r in mine) > 0
    assert all(r["table_rows"] > 0 for r in rows)
    learns = arm in ("bidirectional", "teacher_only")
    assert state.teachers.versions == ([2, 2] if learns else [0, 0])
    assert all(math.isfinite(r["teacher_loss"]) == learns for r in rows)


def test_lamorel_action_set_runs_student_and_lm_teacher_on_six_actions(tmp_path):
    c = tiny("one_way", "default", action_set="lamorel").replace(iterations=1, num_seeds=1)
    state, rows = train(c, str(tmp_path / "run"))
    assert state.tables[0].probs.shape[1] == 6 and state.teachers.action_strings == C.ACTION_STRINGS[:6]
    assert state.runners.params["params"]["Dense_2"]["kernel"].shape[-1] == 6
    assert rows[0]["hint_coverage"] > 0.5
    with pytest.raises(ValueError, match="BabyAI levels only"):
        cfg.resolve(c.replace(env_id="Navix-Empty-5x5-v0"))


def test_table_grows_past_its_capacity(runs):
    _, state, rows = runs["one_way"]
    assert max(r["table_rows"] for r in rows) > 16  # the tiny config starts with 16 rows
    assert all(t.capacity >= 32 for t in state.tables)


def test_seed_independent_of_its_neighbours(runs, tmp_path):
    """Seed 1 of the two-seed bidirectional run == seed 1 run alone (student, teacher, table)."""
    _, _, rows = runs["bidirectional"]
    _, alone = train(tiny("bidirectional", "default").replace(seed=1, num_seeds=1), str(tmp_path / "alone"))
    mine = [r for r in rows if r["seed"] == 1]
    a, b = comparable(mine), comparable(alone)
    for ra, rb in zip(a, b):
        for k in ra:
            assert np.isclose(ra[k], rb[k], rtol=1e-4, atol=1e-5, equal_nan=True), (k, ra[k], rb[k])


def test_resume_after_crash_mid_checkpoint(tmp_path, monkeypatch):
    c = tiny("one_way", "noisy_oracle").replace(iterations=3)
    _, full = train(c, str(tmp_path / "full"))
    d = str(tmp_path / "crashed")
    real = teaching.save_tables

    def crash_at_second(path, tables):
        if "it-000002" in path:
            raise KeyboardInterrupt  # killed while writing the second checkpoint
        real(path, tables)

    monkeypatch.setattr(teaching, "save_tables", crash_at_second)
    with pytest.raises(KeyboardInterrupt):
        train(c, d)
    monkeypatch.setattr(teaching, "save_tables", real)
    assert rundir.latest_checkpoint(d).endswith("it-000001")
    assert any(n.startswith(".tmp-") for n in os.listdir(os.path.join(d, "checkpoints")))
    _, resumed = train(c, d, resume=True)
    assert not any(n.startswith(".tmp-") for n in os.listdir(os.path.join(d, "checkpoints")))
    same_rows(rundir.read_metrics(d), [{k: str(v) for k, v in r.items()} for r in full])
    same_rows(resumed, [{k: str(v) for k, v in r.items()} for r in full])


def test_overlap_teaches_one_update_late_and_resumes(runs, tmp_path, monkeypatch):
    """``overlap``: the teachers work on update t-1 while update t runs; resume restores that work.

    With ``score_first`` in ``distill`` mode the student acts without hints and learns from a
    table holding every situation of its rollout, scored after the previous teacher turn either
    way: overlap changes when the turn runs, not the numbers (each turn is reported one row late).
    """
    c = tiny("bidirectional", "default").replace(overlap=True)  # 2 iterations, as the sync run
    _, full = train(c, str(tmp_path / "full"))
    _, _, sync = runs["bidirectional"]
    student = ("frames", "behaviour_success", "policy_loss", "value_loss", "hint_coverage", "kl_teacher_student")
    for a, b in zip(full, sync):
        assert all(np.isclose(a[k], b[k], rtol=1e-4, equal_nan=True) for k in student), (a, b)
    # no feedback to learn from yet at update 1; afterwards each step teaches the previous update
    assert [math.isnan(r["teacher_loss"]) for r in full] == [True, True, False, False]
    for a, b in zip(full[2:], sync[:2]):
        assert np.isclose(a["teacher_loss"], b["teacher_loss"], rtol=1e-4)
    assert [r["teacher_version"] for r in full if r["iteration"] == 2] == [1, 1]
    d = str(tmp_path / "crashed")
    real = teaching.save_pending

    def crash_at_third(path, pending):
        if "it-000002" in path:
            raise KeyboardInterrupt
        real(path, pending)

    monkeypatch.setattr(teaching, "save_pending", crash_at_third)
    with pytest.raises(KeyboardInterrupt):
        train(c, d)
    monkeypatch.setattr(teaching, "save_pending", real)
    assert os.path.exists(os.path.join(rundir.latest_checkpoint(d), "pending.npz"))
    _, resumed = train(c, d, resume=True)
    same_rows(resumed, [{k: str(v) for k, v in r.items()} for r in full])


def test_update_every_carries_feedback_across_a_resume(tmp_path):
    """``finetune.update_every=2``: the teachers learn at update 2 only (of 3); a run stopped after
    update 1 (its feedback carried in the checkpoint) resumes with the uninterrupted run's rows."""
    ft = dataclasses.replace(tiny().teacher.finetune, update_every=2)
    c = tiny("bidirectional", "default").replace(iterations=3)
    c = c.replace(teacher=dataclasses.replace(c.teacher, finetune=ft))
    _, full = train(c, str(tmp_path / "full"))
    assert [r["teacher_learned"] for r in full] == [0, 0, 1, 1, 0, 0]
    assert [r["teacher_version"] for r in full if r["iteration"] == 3] == [1, 1]
    d = str(tmp_path / "stopped")
    stopped_after_first(c, d)
    assert os.path.exists(os.path.join(rundir.latest_checkpoint(d), "carry.npz"))
    _, resumed = train(c, d, resume=True)
    same_rows(resumed, [{k: str(v) for k, v in r.items()} for r in full])


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    """Kill a real ``bidijax train`` process (SIGKILL) after its first checkpoint, then resume it."""
    c = tiny("bidirectional", "default").replace(iterations=4)
    flags = cli_flags(c) + ["--quiet"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-m", "bidijax.cli", "train", *flags, "--run-dir", killed], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not os.path.exists(os.path.join(killed, "checkpoints", "it-000002", "meta.json")):
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len({r["iteration"] for r in rundir.read_metrics(killed)}) < 4
    assert main(["train", "--resume", killed, "--quiet"]) == 0
    assert main(["train", *flags, "--run-dir", full]) == 0
    same_rows(rundir.read_metrics(killed), rundir.read_metrics(full))


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_resume_errors(capsys, tmp_path, runs):
    one_line_error(capsys, ["train", "--resume", str(tmp_path)], "not a bidijax run directory")
    d, _, _ = runs["one_way"]
    before = sorted(os.listdir(d))
    one_line_error(capsys, ["train", "--resume", d, "--iterations", "7"], "iterations", "changed config")
    assert sorted(os.listdir(d)) == before
    one_line_error(capsys, ["train", "--run-dir", d, "--arm", "ppo"], "already exists")


def test_config_file_and_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("arm: one_way\npreset: lamorel\nppo:\n  lr: 0.001\nteacher:\n  name: uniform\n")
    from bidijax.cli import _Parser, _add_config_flags

    p = _Parser(prog="t")
    p.add_argument("--config")
    _add_config_flags(p)
    from bidijax.cli import config_from_args

    c = config_from_args(p.parse_args(["--config", str(path), "--iterations", "5", "--teacher.eps", "0.5"]))
    assert (c.arm, c.iterations, c.teacher.name, c.teacher.eps) == ("one_way", 5, "uniform", 0.5)
    assert (c.ppo.num_envs, c.ppo.num_steps, c.ppo.lr, c.ppo.hint_mode) == (2, 128, 0.001, "distill")
    assert cfg.from_dict(cfg.to_dict(c)) == c


def test_lamorel_preset_matches_the_reference():
    c = cfg.resolve(cfg.with_preset(cfg.TrainConfig(), "lamorel"))
    assert c.ppo.frames_per_update == 256  # Lamorel PPO_finetuning: steps_per_epoch 256 over 2 envs
    assert c.ppo.frames_per_update // c.ppo.num_minibatches == 8 and c.ppo.update_epochs == 4


def test_plot_writes_pngs(runs, tmp_path):
    from PIL import Image

    dirs = [runs[a][0] for a in ("ppo", "bidirectional")]
    assert main(["plot", *dirs, "--out", str(tmp_path)]) == 0
    for name in ("learning_curves.png", "teacher_agreement.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_render_writes_gif(runs, tmp_path):
    from PIL import Image

    out = tmp_path / "e.gif"
    assert main(["render", runs["one_way"][0], "--out", str(out), "--episodes", "1"]) == 0
    with Image.open(out) as im:
        assert im.format == "GIF" and im.n_frames > 1


def test_report_command_on_runs(runs, tmp_path, capsys):
    dirs = [runs[a][0] for a in ("ppo", "one_way")]
    assert main(["report", *dirs, "--metric", "eval_success", "--baseline", "ppo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ppo" in out and (tmp_path / "summary.csv").exists() and (tmp_path / "summary.md").exists()
    one_line_error(capsys, ["report", *dirs, "--baseline", "nobody"], "nobody")


def test_torch_and_jax_teachers_give_the_same_run(runs, tmp_path):
    """The batched JAX teacher (default for GPT-2 models) and the torch ``HFTeacher`` (the
    reference) give the same bidirectional run up to float rounding."""
    _, state, jax_rows = runs["bidirectional"]
    assert type(state.teachers).__name__ == "GPT2Teachers"
    c = tiny("bidirectional", "default")
    c = c.replace(teacher=dataclasses.replace(c.teacher, backend="torch"))
    state, torch_rows = train(c, str(tmp_path / "torch"))
    assert type(state.teachers).__name__ == "PerSeed"
    for a, b in zip(jax_rows, torch_rows):
        for k in ("behaviour_success", "kl_teacher_student", "teacher_loss", "teacher_kl", "table_rows", "eval_success"):
            assert np.isclose(a[k], b[k], rtol=2e-3, atol=1e-5, equal_nan=True), (k, a[k], b[k])
