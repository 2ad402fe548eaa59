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


# ---------------------------------------------------------------------------------------------
# damaged or misused run directories, config files and outputs (one finished tiny run, copied)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-iteration ppo run (checkpoints after iterations 1 and 2) and its rows."""
    from bidijax.loop import train
    from test_loop import tiny

    d = str(tmp_path_factory.mktemp("hostile") / "ppo")
    _, rows = train(tiny("ppo"), d)
    return d, rows


def _copy(src: str, tmp_path) -> str:
    import shutil

    return shutil.copytree(src, str(tmp_path / "run"))


def _files(d: str) -> dict:
    out = {}
    for root, _, files in os.walk(d):
        for f in set(files) - {rundir.LOCK}:
            with open(os.path.join(root, f), "rb") as fh:
                out[os.path.relpath(os.path.join(root, f), d)] = fh.read()
    return out


@pytest.mark.parametrize(
    "damage, needles",
    [
        (lambda d: open(f"{d}/config.json", "w").write("[1, 2]"), ["config.json", "JSON object", "list"]),
        (lambda d: open(f"{d}/config.json", "w").write("{broken"), ["config.json", "JSONDecodeError"]),
        (lambda d: open(f"{d}/checkpoints/it-000001/meta.json", "w").write("{broken"), ["it-000001/meta.json", "JSONDecodeError"]),
        (lambda d: os.truncate(f"{d}/checkpoints/it-000001/tables.npz", 100), ["it-000001/tables.npz", "remove that directory"]),
    ],
    ids=["config-list", "config-broken", "meta-broken", "tables-truncated"],
)
def test_a_damaged_run_directory_is_one_line_and_left_as_it_was(capsys, tmp_path, finished, damage, needles):
    d = _copy(finished[0], tmp_path)
    rows = open(f"{d}/metrics.csv").read().splitlines(keepends=True)
    open(f"{d}/metrics.csv", "w").write("".join(rows[:-1]))  # iteration 2 incomplete: resume reads checkpoint 1
    damage(d)
    before = _files(d)
    one_line_error(capsys, ["train", "--resume", d], *needles)
    assert _files(d) == before  # nothing of the run changed


def test_a_torn_last_row_of_a_finished_run_is_recomputed_on_resume(capsys, tmp_path, finished):
    from bidijax.cli import main
    from helpers import same
    from test_loop import comparable

    d = _copy(finished[0], tmp_path)
    text = open(f"{d}/metrics.csv").read()
    open(f"{d}/metrics.csv", "w").write(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # half the last line
    assert main(["train", "--resume", d, "--quiet"]) == 0
    same(comparable(rundir.read_metrics(d, typed=True)), comparable(finished[1]), rtol=0, atol=0)


def test_resuming_a_finished_run_says_so_and_changes_nothing(capsys, tmp_path, finished):
    from bidijax.cli import main

    d = _copy(finished[0], tmp_path)
    before = _files(d)
    assert main(["train", "--resume", d]) == 0
    assert "is finished (all 2 iterations" in capsys.readouterr().out
    assert _files(d) == before


def test_a_compacted_finished_run_is_finished_on_resume(capsys, tmp_path, finished):
    """``experiments/compact_results.py`` drops a finished run's non-evaluation rows; resuming
    it must not take the missing rows for lost ones and train it again from the start."""
    from bidijax.cli import main

    d = _copy(finished[0], tmp_path)
    lines = open(f"{d}/metrics.csv").read().splitlines(keepends=True)
    last = [ln for ln in lines[1:] if ln.startswith("2,")]
    assert last and len(last) < len(lines) - 1  # the header is "iteration,...": keep only iteration 2
    open(f"{d}/metrics.csv", "w").write(lines[0] + "".join(last))
    before = _files(d)
    assert main(["train", "--resume", d]) == 0
    assert "is finished (all 2 iterations" in capsys.readouterr().out
    assert _files(d) == before


@pytest.mark.parametrize(
    "name, content, needles",
    [
        ("c.yaml", b"\x7fELF\x02\x01\x01\x00\xd0\xff", ["c.yaml", "not text"]),
        ("c.yaml", b"", ["c.yaml", "empty"]),
        ("c.json", b"  \n", ["c.json", "empty"]),
        ("c.yaml", b"# iterations: 3\n", ["c.yaml", "holds no settings"]),
        ("c.yaml", b"- 1\n- 2\n", ["c.yaml", "mapping", "list"]),
    ],
    ids=["binary", "empty-yaml", "empty-json", "comments-only", "a-list"],
)
def test_bad_config_files_are_named(capsys, tmp_path, name, content, needles):
    path = tmp_path / name
    path.write_bytes(content)
    one_line_error(capsys, ["train", "--config", str(path), "--run-dir", str(tmp_path / "run")], *needles)
    assert not (tmp_path / "run").exists()


def test_plot_out_naming_a_file_and_runs_of_two_environments(capsys, tmp_path, finished):
    import json

    f = tmp_path / "precious.png"
    f.write_bytes(b"precious")
    one_line_error(capsys, ["plot", finished[0], "--out", str(f)], str(f), "existing file")
    assert f.read_bytes() == b"precious"
    other = _copy(finished[0], tmp_path)
    config = json.load(open(f"{other}/config.json"))
    config["env_id"] = "BabyAI-GoToLocal-v0"
    json.dump(config, open(f"{other}/config.json", "w"))
    one_line_error(capsys, ["plot", finished[0], other, "--out", str(tmp_path / "plots")],
                   "different environments", "BabyAI-GoToRedBallNoDists-v0", "BabyAI-GoToLocal-v0")  # fmt: skip
    assert not (tmp_path / "plots").exists()


def test_a_teacher_arm_on_a_gymnax_environment_is_refused_up_front(capsys, tmp_path):
    one_line_error(capsys, ["train", "--env", "gymnax:CartPole-v1", "--arm", "one_way", "--run-dir", str(tmp_path / "r")],
                   "one_way", "gymnax:CartPole-v1", "--arm ppo")  # fmt: skip
    assert not (tmp_path / "r").exists()


def test_a_huge_argument_is_not_echoed_whole(capsys, tmp_path):
    huge = "x" * 100_000
    err = one_line_error(capsys, ["train", "--env", huge, "--run-dir", str(tmp_path / "r")], "characters)")
    assert len(err) < 5_000


def test_wandb_without_a_login_is_one_line_and_leaves_nothing(capsys, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, no saved W&B settings
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home"))
    d = tmp_path / "run"
    one_line_error(capsys, ["train", "--arm", "ppo", "--iterations", "1", "--wandb", "--run-dir", str(d)], "--wandb", "wandb login")
    assert not d.exists()


def test_the_hub_clients_retry_warnings_are_held_back(capfd):
    import logging

    from bidijax.teacher import hf

    def offline():
        for attempt in range(3):
            logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry %d/5].", attempt + 1)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nmore text")

    level = logging.getLogger("huggingface_hub").level
    with pytest.raises(ValueError) as err:
        hf._load("config", "google/flan-t5-small", offline)
    assert str(err.value) == ("cannot load the config of model hub id 'google/flan-t5-small': "
                              "OSError: We couldn't connect to 'https://huggingface.co' to load the files.")  # fmt: skip
    assert "Retrying" not in capfd.readouterr().err
    assert logging.getLogger("huggingface_hub").level == level  # restored


def test_render_of_a_ppo_run_says_it_has_no_teacher():
    import numpy as np

    from bidijax.render import _hint_text

    probs = np.full(7, 1 / 7)
    assert _hint_text(probs, False, "ppo") == "no teacher (ppo arm)"
    assert _hint_text(probs, False, "one_way") == "teacher: no hint (situation not in the table)"


SLOW_CLI = """
import sys, time
from bidijax import cli
shown = cli.Progress.__call__
cli.Progress.__call__ = lambda self, rows, state: (shown(self, rows, state), time.sleep(3))  # time to be interrupted
sys.exit(cli.main(sys.argv[1:]))
"""


def test_ctrl_c_stops_with_one_line_and_resumes_exactly(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from bidijax.cli import main
    from bidijax.loop import train
    from helpers import reaped, same, worker_env
    from test_loop import cli_flags, comparable, tiny

    c = tiny("ppo").replace(iterations=3)
    d = str(tmp_path / "run")
    with reaped([subprocess.Popen([sys.executable, "-c", SLOW_CLI, "train", *cli_flags(c), f"--run-dir={d}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker_env())]) as (p,):  # fmt: skip
        while not os.path.exists(f"{d}/checkpoints/it-000001/meta.json") and p.poll() is None:
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)  # during iteration 1's pause
        _, err = p.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert p.returncode == 130, err[-3000:]
    assert lines[-1] == f"bidijax train: interrupted; its last checkpoint is it-000001; continue with --resume {d}", err[-3000:]
    assert "Traceback" not in err
    _, reference = train(c, str(tmp_path / "reference"))
    assert main(["train", "--resume", d, "--quiet"]) == 0
    same(comparable(rundir.read_metrics(d, typed=True)), comparable(reference), rtol=0, atol=0)


def test_sigterm_stops_train_like_ctrl_c_and_restores_the_handler(tmp_path, monkeypatch, capsys):
    """A scheduler's time limit (SIGTERM) gets Ctrl-C's one line, with SIGTERM's exit code 143,
    instead of killing the process silently; the handler is only bidijax's while it trains."""
    import json
    import signal
    import time

    from bidijax import cli, loop

    d = tmp_path / "run"

    def killed_after_first_checkpoint(config, run_dir, **kw):
        ckpt = d / "checkpoints" / "it-000001"
        ckpt.mkdir(parents=True)
        (ckpt / "meta.json").write_text(json.dumps({"iteration": 1}))
        (d / "checkpoints" / "LATEST").write_text("it-000001")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # cut short by the handler's exception
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(loop, "train", killed_after_first_checkpoint)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["train", "--arm=ppo", "--iterations=2", f"--run-dir={d}", "--quiet"]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"bidijax train: stopped by SIGTERM; its last checkpoint is it-000001; continue with --resume {d}"
    assert signal.getsignal(signal.SIGTERM) is before
