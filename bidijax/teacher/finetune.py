"""From the student's feedback to the teacher's training signal (numpy only: no torch here).

The student's feedback (``bidijax.feedback.Feedback``) holds, per hint-table row (situation) and
action, sums of the critic's GAE advantages and one-step TD errors, and their counts.
``HFTeacher.update`` turns it into a training batch with the functions of this module:

1. ``targets``: one weight per (situation, action): the mean statistic (``signal``), standardised
   over all visited entries of the situations the teacher knows, times ``count / (count +
   min_count)`` so that entries seen once or twice weigh less;
2. ``sampling_probs``: situations are sampled (with replacement, from the teacher's seeded torch
   generator) in proportion to their visits;

then takes ``steps`` AdamW steps, each on ``batch_size`` sampled situations ``s``, on

    loss = - mean_s sum_a ( target+[s, a] * log pi(a | s) + target-[s, a] * log(1 - pi(a | s)) )
           + kl_coef * mean_s KL(pi(.|s) || pi_ref(.|s))

where ``pi = softmax(action log-probs / temperature)`` is the teacher's action distribution
(``HFTeacher.action_logprobs``) and ``pi_ref`` that of a frozen reference: a copy of the weights
taken before the first update (full fine-tuning) or the base model with its adapters switched off
(LoRA). ``target+ = max(target, 0)`` and ``target- = max(-target, 0)``: actions that paid off
are pushed up by their log-likelihood (advantage-weighted, as a policy gradient over the
student's visits), actions that did not are pushed down by the unlikelihood ``log(1 - pi)``,
which is bounded: ``- target * log pi`` on a negative target drives ``log pi`` to ``-inf``
without end (no KL penalty holds it), while ``log(1 - pi)`` stops pushing once ``pi`` is near 0.
``most_visited`` picks the situations to re-score after an update.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SIGNALS = ("advantage", "td")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """How an ``HFTeacher`` learns from feedback (see the module docstring for the objective).

    ``lr``, ``weight_decay``: AdamW. ``steps``: optimiser steps per ``update``, each on
    ``batch_size`` situations. ``kl_coef``: weight of the KL penalty to the reference.
    ``min_count``: an entry seen ``n`` times weighs ``n / (n + min_count)``. ``signal``: the
    feedback statistic, ``"advantage"`` (GAE) or ``"td"`` (TD error). ``max_grad_norm``: gradient
    clipping (0: off). ``lora_rank``: 0 fine-tunes all weights; > 0 trains LoRA adapters of that
    rank instead (needs ``peft``: ``pip install bidijax[lora]``). ``micro_batch_size``: distinct
    situations per forward/backward pass (a situation drawn ``m`` times in a step is computed once
    and weighs ``m``); a step accumulates the gradients of its micro-batches (same loss,
    memory bounded by the micro-batch: a 77M-parameter T5 at batch 256 in one pass needs > 22 GB).
    """

    lr: float = 3e-4
    steps: int = 2
    batch_size: int = 64
    kl_coef: float = 0.1
    min_count: float = 2.0
    signal: str = "advantage"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_rank: int = 0
    micro_batch_size: int = 32

    def __post_init__(self):
        if self.signal not in SIGNALS:
            raise ValueError(f"finetune signal={self.signal!r} is not allowed; use one of {', '.join(SIGNALS)}")
        for name in ("steps", "batch_size", "micro_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"finetune {name}={value!r} is not allowed; use an integer >= 1")
        if not isinstance(self.lora_rank, (int, np.integer)) or self.lora_rank < 0:
            raise ValueError(f"finetune lora_rank={self.lora_rank!r} is not allowed; use an integer >= 0 (0: no LoRA)")
        if not self.lr > 0:
            raise ValueError(f"finetune lr={self.lr!r} is not allowed; use a number > 0")
        for name in ("kl_coef", "min_count", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"finetune {name}={value!r} is not allowed; use a number >= 0")


def targets(feedback, signal: str = "advantage", min_count: float = 2.0, rows=None) -> np.ndarray:
    """``float32 [K, A]``: the training weight of every (situation, action) of ``feedback``.

    The mean ``signal`` per entry (``adv_sum / count`` or ``td_sum / count``), standardised (zero
    mean, unit standard deviation) over the visited entries (``count > 0``) of the rows selected
    by ``rows`` (bool ``[K]``; default all), times ``count / (count + min_count)``. Every other
    entry is 0, and so is everything when the selected means do not vary (no signal).
    """
    if signal not in SIGNALS:
        raise ValueError(f"signal={signal!r} is not allowed; use one of {', '.join(SIGNALS)}")
    total = np.asarray(feedback.adv_sum if signal == "advantage" else feedback.td_sum, np.float64)
    count = np.asarray(feedback.count, np.float64)
    seen = count > 0
    if rows is not None:
        seen &= np.asarray(rows, bool)[:, None]
    out = np.zeros(count.shape, np.float64)
    if seen.any():
        mean = total[seen] / count[seen]
        sd = mean.std()
        if sd > 1e-8 * max(1.0, np.abs(mean).max()):
            out[seen] = (mean - mean.mean()) / sd * (count[seen] / (count[seen] + min_count))
    return out.astype(np.float32)


def sampling_probs(visits, rows=None) -> np.ndarray | None:
    """``float64 [K]``: the probability of sampling each situation, proportional to its visits.

    Only the rows selected by ``rows`` (bool ``[K]``; default all) can be drawn. ``None`` when no
    selected row was visited (nothing to train on).
    """
    w = np.maximum(np.asarray(visits, np.float64).reshape(-1), 0.0)
    if rows is not None:
        w = w * np.asarray(rows, bool)
    total = w.sum()
    return w / total if total > 0 else None


def most_visited(keys, visits, budget: int) -> np.ndarray:
    """The keys (``uint32 [n, 2]``, ``n <= budget``) of the most visited situations.

    Most visited first; ties go to the smaller key (``hi``, then ``lo``), so the choice is
    deterministic. Situations never visited are left out.
    """
    keys = np.asarray(keys, np.uint32).reshape(-1, 2)
    visits = np.asarray(visits, np.float64).reshape(-1)
    if len(visits) != len(keys):
        raise ValueError(f"most_visited: {len(keys)} keys but {len(visits)} visit counts")
    if budget <= 0 or not len(keys):
        return keys[:0]
    order = np.lexsort((keys[:, 1], keys[:, 0], -visits))[:budget]  # last key sorts first
    return keys[order[visits[order] > 0]]
