"""JAX's share of a GPU it shares with a torch teacher: chosen from the config, set before JAX's
backend starts, and never over the user's own XLA memory settings (logic tested on this CPU)."""

import os
import subprocess
import sys
import textwrap

import pytest

from bidijax import config as cfg
from bidijax import gpu_memory

TORCH_LM = cfg.TeacherConfig(name="default", backend="torch")


def test_shared_gpu_env():
    assert gpu_memory.shared_gpu_env(True, 0.5, {}) == {"XLA_CLIENT_MEM_FRACTION": "0.5"}
    assert gpu_memory.shared_gpu_env(True, 0.35, {"PATH": "/bin"}) == {"XLA_CLIENT_MEM_FRACTION": "0.35"}
    assert gpu_memory.shared_gpu_env(False, 0.5, {}) == {}
    for name in gpu_memory.USER_VARIABLES:  # the user's own setting wins
        assert gpu_memory.shared_gpu_env(True, 0.5, {name: "false"}) == {}


@pytest.mark.parametrize(
    "changes, on_cuda",
    [
        (dict(arm="bidirectional", teacher=TORCH_LM), True),
        (dict(arm="ppo", teacher=TORCH_LM), False),  # no teacher
        (dict(arm="one_way", teacher=cfg.TeacherConfig(name="oracle")), False),  # scripted
        (dict(arm="one_way", teacher=cfg.TeacherConfig(name="default", backend="jax")), False),  # all JAX
    ],
)
def test_only_a_torch_lm_teacher_on_cuda_shares_the_gpu(monkeypatch, changes, on_cuda):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = cfg.resolve(cfg.TrainConfig(**changes))
    assert gpu_memory.torch_teacher_on_cuda(config) is on_cuda
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_memory.torch_teacher_on_cuda(config) is False  # a CPU: nothing to share


def test_too_late_says_what_to_set(monkeypatch, capsys):
    import torch
    from jax._src import xla_bridge

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: True)
    env = {}
    config = cfg.resolve(cfg.TrainConfig(teacher=TORCH_LM, jax_gpu_memory_fraction=0.4))
    assert gpu_memory.configure(config, env) == {} and env == {}
    err = capsys.readouterr().err.strip()
    assert "XLA_CLIENT_MEM_FRACTION=0.4" in err and "\n" not in err


def test_fraction_is_checked():
    for bad in (0.0, 1.0, float("nan"), 1.5):
        with pytest.raises(ValueError, match="jax_gpu_memory_fraction=.* strictly between 0 and 1"):
            cfg.resolve(cfg.TrainConfig(jax_gpu_memory_fraction=bad))


SCRIPT = textwrap.dedent(
    """
    import os, torch
    torch.cuda.is_available = lambda: True  # as on a machine with a GPU
    from bidijax import config as cfg, gpu_memory
    from jax._src import xla_bridge
    config = cfg.resolve(cfg.TrainConfig(teacher=cfg.TeacherConfig(name="default", backend="torch")))
    assert not xla_bridge.backends_are_initialized()  # bidijax's imports leave JAX's backend alone
    assert gpu_memory.configure(config) == {"XLA_CLIENT_MEM_FRACTION": "0.5"}
    assert os.environ["XLA_CLIENT_MEM_FRACTION"] == "0.5"
    import jax.numpy as jnp
    jnp.zeros(1).block_until_ready()  # the backend starts after the setting (ignored on a CPU)
    print("OK")
    """
)


def test_set_before_the_backend_starts_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k not in gpu_memory.USER_VARIABLES}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-2000:]
