"""GPU memory shared by JAX (the student) and a torch teacher on the same GPU.

When JAX first uses a GPU, XLA preallocates 75% of its memory, which leaves a torch teacher on the
same GPU too little. When a run's teacher is a torch language model on CUDA, bidijax gives JAX a
fixed share instead (``TrainConfig.jax_gpu_memory_fraction``, through ``XLA_CLIENT_MEM_FRACTION``)
before JAX starts its backend; torch takes what it needs from the rest. Any memory setting the user
made in the environment wins. Scripted teachers and the JAX teacher backend need nothing: all of
the GPU's memory is then JAX's. On a CPU nothing changes.
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping

#: XLA's GPU memory variables (``jaxlib.xla_client``); if the user set any of them, bidijax sets none
USER_VARIABLES = (
    "XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
)  # fmt: skip


def shared_gpu_env(torch_on_cuda: bool, fraction: float, environ: MutableMapping[str, str]) -> dict[str, str]:
    """The environment variables to set: JAX's share of the GPU when a torch teacher shares it
    (``{}`` when it does not, or when ``environ`` already holds a memory setting)."""
    if not torch_on_cuda or any(name in environ for name in USER_VARIABLES):
        return {}
    return {"XLA_CLIENT_MEM_FRACTION": f"{fraction:g}"}


def torch_teacher_on_cuda(config) -> bool:
    """Whether ``config``'s teacher is a torch language model that will run on a CUDA GPU."""
    from .teacher.models import backend_of

    tc = config.teacher
    if not config.uses_teacher or tc.scripted or backend_of(tc) != "torch":
        return False
    import torch

    return bool(torch.cuda.is_available())


def configure(config, environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set ``shared_gpu_env`` for ``config`` in ``environ`` before JAX starts its backend; returns
    what it set. If JAX's backend is already running it is too late: one line says what to set."""
    changes = shared_gpu_env(torch_teacher_on_cuda(config), config.jax_gpu_memory_fraction, environ)
    if not changes:
        return {}
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        wanted = " ".join(f"{k}={v}" for k, v in changes.items())
        print(f"bidijax: JAX already holds the GPU's memory; for a torch teacher on the same GPU start with {wanted}",
              file=sys.stderr)  # fmt: skip
        return {}
    environ.update(changes)
    return changes
