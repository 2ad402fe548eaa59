"""Typed configuration of the PPO student."""

from __future__ import annotations

import dataclasses
import math

HINT_MODES = ("none", "distill", "prior", "teacher_policy")
#: PPO fields that only change numbers, never shapes: the student reads them from a traced
#: ``Hyper`` pytree (``RunnerState.hyper``), so one compiled program runs any mix of values (a
#: sweep's cells side by side, vmapped like seeds)
TRACED = (
    "lr", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef", "max_grad_norm",
    "beta_start", "beta_end", "beta_anneal_frac", "prior_weight", "distill_temperature",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters and the way the student uses teacher hints.

    ``hint_mode``: ``none`` (plain PPO), ``distill`` (PPO + ``beta_k * CE(teacher, student)`` on
    steps whose situation is in the hint table, ``beta_k`` linear from ``beta_start`` to
    ``beta_end`` over the first ``beta_anneal_frac * num_updates`` updates, then ``beta_end``),
    ``prior`` (act from
    ``softmax(student_logits + prior_weight * log teacher_probs)``; the student's own log-probs
    are trained with the PPO ratio ``pi_student / pi_behaviour``) or ``teacher_policy`` (act from
    the teacher's table alone; the critic and the student still learn from those steps).
    """

    num_envs: int = 64
    num_steps: int = 128
    num_minibatches: int = 4
    update_epochs: int = 4
    lr: float = 2.5e-4
    anneal_lr: bool = False
    #: the run's length in updates: horizon of the learning-rate annealing and of the beta
    #: schedule (``bidijax.config.resolve`` sets it to the run's ``iterations``)
    num_updates: int = 1000
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    clip_value: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    hint_mode: str = "none"
    beta_start: float = 1.0
    #: floor of the distillation weight: > 0 keeps the teacher's hints in the loss for the whole run
    beta_end: float = 0.1
    beta_anneal_frac: float = 0.5  # fraction of ``num_updates`` over which beta falls to beta_end
    prior_weight: float = 1.0
    #: the distillation target is the hint at this temperature, ``softmax(log p / T)``: 1 (default)
    #: the hint itself, < 1 sharper (towards the teacher's argmax), > 1 flatter
    distill_temperature: float = 1.0
    #: distinct missed situations kept per update (0: num_envs * num_steps, i.e. all of them)
    miss_buffer_size: int = 0
    max_objects: int = 8
    # teacher/oracle agreement of an update: measured on this many hit steps drawn uniformly
    # without replacement (all of them when there are fewer; standard error <= 0.5 / sqrt(n) per
    # update), the BFS oracle running after the rollout on those steps only; 0 = every hit step
    agreement_samples: int = 64

    def __post_init__(self):
        if self.hint_mode not in HINT_MODES:
            raise ValueError(f"hint_mode={self.hint_mode!r} is not one of {HINT_MODES}")
        for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "hidden", "num_updates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError(
                f"num_minibatches={self.num_minibatches} must divide num_envs * num_steps = "
                f"{self.num_envs * self.num_steps}"
            )
        if self.miss_buffer_size < 0:
            raise ValueError(f"miss_buffer_size={self.miss_buffer_size} must be >= 0 (0: every distinct situation)")
        if self.agreement_samples < 0:
            raise ValueError(f"agreement_samples={self.agreement_samples} must be >= 0")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gamma={self.gamma} and gae_lambda={self.gae_lambda} must lie in [0, 1]")
        if not 0.0 <= self.beta_anneal_frac <= 1.0:
            raise ValueError(f"beta_anneal_frac={self.beta_anneal_frac} must lie in [0, 1]")
        positive = ("lr", "clip_eps", "max_grad_norm", "distill_temperature")
        for name in positive + ("ent_coef", "vf_coef", "beta_start", "beta_end", "prior_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or (value <= 0 if name in positive else value < 0):
                raise ValueError(f"ppo.{name}={value!r} must be a finite number {'> 0' if name in positive else '>= 0'}")

    @property
    def frames_per_update(self) -> int:
        return self.num_envs * self.num_steps

    def replace(self, **changes) -> "PPOConfig":
        return dataclasses.replace(self, **changes)
