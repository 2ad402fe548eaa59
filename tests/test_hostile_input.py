"""Bad input to ``bidijax train``: one line naming the value and what is allowed, exit code 2,
nothing left behind and nothing of an existing run lost (a catalogue, growing with each class)."""

import os

import pytest

from bidijax import rundir
from helpers import one_line_error


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--env", "BabyAI-Nope-v0"], ["BabyAI-Nope-v0", "BabyAI-GoToRedBallNoDists-v0"]),
        (["--arm", "sideways"], ["sideways", "bidirectional"]),
        (["--teacher", "/no/such/model"], ["/no/such/model"]),
        (["--ppo.num-envs", "3", "--ppo.num-steps", "5", "--ppo.num-minibatches", "4"], ["num_minibatches=4", "15"]),
        (["--iterations", "0"], ["iterations=0"]),
        (["--ppo.num-envs", "many"], ["many", "int"]),
        (["--preset", "huge"], ["huge", "lamorel"]),
        (["--ppo.lr", "-1"], ["ppo.lr=-1.0", "> 0"]),
        (["--ppo.lr", "nan"], ["ppo.lr=nan", "finite"]),
        (["--ppo.clip-eps", "0"], ["ppo.clip_eps=0.0"]),
        (["--ppo.ent-coef", "-0.1"], ["ppo.ent_coef=-0.1", ">= 0"]),
        (["--ppo.max-grad-norm", "inf"], ["ppo.max_grad_norm=inf"]),
        (["--ppo.beta-end", "nan"], ["ppo.beta_end=nan"]),
        (["--teacher.finetune.lr", "inf"], ["lr=inf", "finite"]),
        (["--teacher.finetune.kl-coef", "-1"], ["kl_coef=-1.0"]),
        (["--teacher.temperature", "inf"], ["temperature=inf"]),
        (["--teacher.backend", "gpu"], ["gpu", "jax", "torch"]),
        (["--arm", "ppo", "--hint-mode", "bogus"], ["bogus", "ppo"]),
        (["--num-seeds", "100000000"], ["num_seeds=100000000", "GiB"]),
        (["--seed", str(2**70)], ["seed=", "2**31"]),
        (["--table-capacity", "1000000000000"], ["table_capacity=1000000000000"]),
        (["--eval-episodes", "0"], ["eval_episodes=0"]),
        (["--action-set", "lamorel", "--env", "Navix-Empty-5x5-v0"], ["lamorel", "BabyAI levels only"]),
        (["--action-set", "atari"], ["atari", "minigrid"]),
        (["--teacher.finetune.baseline", "median"], ["median", "situation"]),
        (["--devices", "-1"], ["devices=-1", ">= 0"]),
        (["--devices", "4096"], ["devices=4096", "local device"]),
    ],
)
def test_bad_numbers_and_choices(capsys, tmp_path, flags, needles):
    d = tmp_path / "run"
    one_line_error(capsys, ["train", "--run-dir", str(d), *flags], *needles)
    assert not d.exists()


def test_yaml_boolean_is_no_number(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("iterations: true\n")
    one_line_error(capsys, ["train", "--config", str(path), "--run-dir", str(tmp_path / "run")], "iterations=True", "int")
    assert not (tmp_path / "run").exists()


def test_run_dir_naming_a_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("precious")
    one_line_error(capsys, ["train", "--run-dir", str(f), "--arm", "ppo", "--iterations", "1"], str(f))
    assert f.read_text() == "precious"


def test_a_run_directory_in_use_is_refused_and_kept(capsys, tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    held = rundir.lock(str(d))  # as a concurrent `bidijax train --run-dir d` holds it
    try:
        one_line_error(capsys, ["train", "--run-dir", str(d), "--arm", "ppo", "--iterations", "1"], "in use")
        assert d.is_dir()
    finally:
        os.close(held)
    with pytest.raises(ValueError, match="in use"):
        a = rundir.lock(str(d))
        try:
            rundir.lock(str(d))
        finally:
            os.close(a)


def test_checkpoint_of_another_version_is_one_line(tmp_path):
    """A checkpoint whose student state has another structure (e.g. written before the traced
    ``hyper`` joined ``RunnerState``) is refused with one line, not an orbax traceback."""
    import jax.numpy as jnp

    from bidijax import rundir as rd

    d = str(tmp_path / "run")
    os.makedirs(d)
    path = rd.save_checkpoint(d, 1, {"params": jnp.zeros(3)}, {"seeds": [0]})
    with pytest.raises(ValueError) as err:
        rd.load_checkpoint(path, {"params": jnp.zeros(3), "hyper": jnp.zeros(2)})
    assert "\n" not in str(err.value) and "another bidijax version" in str(err.value)
    meta, tree = rd.load_checkpoint(path, {"params": jnp.zeros(3)})  # the matching structure loads
    assert meta["iteration"] == 1 and tree["params"].shape == (3,)
