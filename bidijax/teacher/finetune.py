"""From the student's feedback to the teacher's training signal, and the objective it trains on.

The student's feedback (``bidijax.feedback.Feedback``) holds, per hint-table row (situation) and
action, sums of the critic's GAE advantages and one-step TD errors, and their counts.
``HFTeacher.update`` turns it into a training batch with the functions of this module:

1. ``targets``: one weight per (situation, action): the mean statistic (``signal``) minus a
   baseline (each situation's own mean, or one mean over all entries), divided by the spread of
   those differences or by an absolute ``noise_floor``, whichever is larger, times ``count /
   (count + min_count)`` so that entries seen once or twice weigh less;
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
``log(1 - pi(a))`` is computed as the log-sum-exp of the other actions' log-probabilities, so a
confident wrong hint (``pi(a)`` rounding to 1) still gets a gradient. The mass an unlikelihood
step frees goes to every other action in proportion to its probability, including actions that
never paid off. That is ``objective="unlikelihood"`` (the default). With ``objective="reweight"``
the first term is instead

    mean_s KL( q(.|s) || pi(.|s) ),   q(a|s) = pi_old(a|s) exp(target[s, a]) / Z(s)

with ``pi_old`` the teacher before the step (no gradient through it): each step moves the teacher
towards its own distribution re-weighted by the exponentiated targets (the KL-regularised policy
improvement step of MPO/AWR), so the mass a bad action loses goes mostly to the actions that paid
off, and actions without feedback (target 0) keep their share relative to each other. The targets
are standardised, so the re-weighting's temperature is 1 in their units.
``feedback_oracle_corr`` measures how informative a batch of targets is (rank correlation with
the BFS oracle's optimal actions).
``most_visited`` picks the situations to re-score after an update.
``feedback_loss`` (torch, for ``HFTeacher``) and ``feedback_loss_jax`` (for the stacked JAX
teachers) compute the objective; ``draw`` draws the situations of a step for both backends;
``torch_steps`` takes a torch teacher's optimiser steps on it.
torch and JAX are imported inside those functions only: ``bidijax.config`` imports this module.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SIGNALS = ("advantage", "td")
BASELINES = ("none", "situation")
OBJECTIVES = ("unlikelihood", "reweight")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """How a teacher learns from the student's feedback (``TeacherConfig.finetune``; the objective
    is in the module docstring). Torch-free: part of ``bidijax.config``'s tree.

    ``lr``, ``weight_decay``: AdamW. ``steps``: optimiser steps per update, each on
    ``batch_size`` situations drawn in proportion to their visits. ``kl_coef``: weight of the KL
    penalty to the reference. ``min_count``: an entry seen ``n`` times weighs ``n / (n +
    min_count)``. ``signal``: the feedback statistic, ``"advantage"`` (GAE) or ``"td"`` (TD
    error). ``baseline`` and ``noise_floor``: how ``targets`` centres and scales it.
    ``max_grad_norm``: gradient clipping (0: off). ``lora_rank``: 0 fine-tunes all weights; > 0
    trains LoRA adapters of that rank instead (torch backend; needs ``peft``).
    ``micro_batch_size``: distinct situations per forward/backward pass of the torch backend
    (gradients accumulated: the same loss, memory bounded by the micro-batch).
    ``rescore_budget``: most visited situations re-scored after an update. ``objective``: how the
    targets move the teacher, ``"unlikelihood"`` or ``"reweight"`` (module docstring).
    ``start_iteration``
    and ``min_explained_variance``: the teacher learns from an update's feedback only after that
    many student updates, and when the critic's explained variance in it is at least that.
    ``update_every``: the teacher learns on every ``k``-th student update only, from the feedback
    of the updates since it last learned, summed per (situation, action) (``steps`` steps of
    ``batch_size`` draws each time: ``batch_size * k`` keeps the examples per frame of ``k = 1``).
    """

    lr: float = 3e-4
    steps: int = 2
    batch_size: int = 64
    kl_coef: float = 0.1
    min_count: float = 2.0
    signal: str = "advantage"
    baseline: str = "situation"
    noise_floor: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_rank: int = 0
    micro_batch_size: int = 32
    rescore_budget: int = 32
    objective: str = "unlikelihood"
    start_iteration: int = 0
    min_explained_variance: float = -1e9
    update_every: int = 1

    def __post_init__(self):
        _choice("signal", self.signal, SIGNALS)
        _choice("baseline", self.baseline, BASELINES)
        _choice("objective", self.objective, OBJECTIVES)
        for name in ("steps", "batch_size", "micro_batch_size", "update_every"):
            _number(name, getattr(self, name), 1, integer=True)
        for name in ("lora_rank", "rescore_budget", "start_iteration"):
            _number(name, getattr(self, name), 0, integer=True)
        _number("lr", self.lr, 0, strict=True)
        for name in ("kl_coef", "min_count", "weight_decay", "max_grad_norm", "noise_floor"):
            _number(name, getattr(self, name), 0)
        _number("min_explained_variance", self.min_explained_variance, -float("inf"))


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"finetune {name}={value!r} is not allowed; use one of {', '.join(allowed)}")


def _number(name: str, value, low, integer: bool = False, strict: bool = False) -> None:
    """One-line error unless ``value`` is a finite number >= ``low`` (> with ``strict``)."""
    kind = "an integer" if integer else "a finite number"
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) if integer else (
        isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value)
    )
    if not ok or (value <= low if strict else value < low):
        raise ValueError(f"finetune {name}={value!r} is not allowed; use {kind} {'>' if strict else '>='} {low}")


def targets(
    feedback, signal: str = "advantage", min_count: float = 2.0, rows=None, baseline: str = "none",
    noise_floor: float = 0.0,
) -> np.ndarray:
    """``float32 [K, A]``: the training weight of every (situation, action) of ``feedback``.

    The mean ``signal`` per entry (``adv_sum / count`` or ``td_sum / count``) over the visited
    entries (``count > 0``) of the rows selected by ``rows`` (bool ``[K]``; default all), minus a
    baseline: with ``baseline="none"`` the mean over all those entries; with
    ``baseline="situation"`` each situation's own visit-weighted mean (so a critic error in one
    state, which shifts all of its actions alike, cancels; a situation with one visited action
    gives 0). Then divided by ``max(sd, noise_floor)`` (``sd``: the standard deviation of the
    entries' means around their baselines) and multiplied by ``count / (count + min_count)`` so
    that entries seen once or twice weigh less. The noise floor is absolute, in the signal's
    units: when the student's advantages are all small (late in training, mostly critic noise),
    the targets shrink with them instead of being scaled up to unit size. Every other entry is 0,
    and so is everything when the selected means do not vary (no signal).
    """
    if signal not in SIGNALS:
        raise ValueError(f"signal={signal!r} is not allowed; use one of {', '.join(SIGNALS)}")
    if baseline not in BASELINES:
        raise ValueError(f"baseline={baseline!r} is not allowed; use one of {', '.join(BASELINES)}")
    total = np.asarray(feedback.adv_sum if signal == "advantage" else feedback.td_sum, np.float64)
    count = np.asarray(feedback.count, np.float64)
    seen = count > 0
    if rows is not None:
        seen &= np.asarray(rows, bool)[:, None]
    out = np.zeros(count.shape, np.float64)
    if not seen.any():
        return out.astype(np.float32)
    mean = np.where(seen, total / np.maximum(count, 1.0), 0.0)
    if baseline == "situation":
        visits = np.where(seen, count, 0.0).sum(1, keepdims=True)
        base = np.where(seen, total, 0.0).sum(1, keepdims=True) / np.maximum(visits, 1.0)
        centred = (mean - base)[seen]
    else:
        centred = mean[seen] - mean[seen].mean()
    sd = np.sqrt(np.mean(np.square(centred)))
    if sd > 1e-8 * max(1.0, np.abs(mean[seen]).max()):
        out[seen] = centred / max(sd, noise_floor) * (count[seen] / (count[seen] + min_count))
    return out.astype(np.float32)


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of two 1-D samples (average ranks for ties); NaN when
    either is constant or there are fewer than 2 points."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if len(x) < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
    return float(np.sum(rx * ry) / denom) if denom > 0 else float("nan")


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(x)] - 1
    ranks = np.empty(len(x))
    ranks[order] = (first[group] + last[group]) / 2.0
    return ranks


def feedback_oracle_corr(weights, count, oracle, has_oracle) -> float:
    """How informative the student's feedback was: the rank correlation, over the visited
    (situation, action) entries of situations with a known oracle (``has_oracle`` bool ``[K]``),
    between the training weight (``targets``) and whether the BFS oracle calls the action
    optimal there (``oracle`` bool ``[K, A]``). NaN when undefined (no entry, or no variation)."""
    use = (np.asarray(count) > 0) & np.asarray(has_oracle, bool)[:, None]
    return rank_correlation(np.asarray(weights)[use], np.asarray(oracle, bool)[use])


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


def plan(feedback, keys, prompts, config: FinetuneConfig):
    """``(k64, probs, weight)`` of one update: the 64-bit keys of ``keys`` (``uint32 [K, 2]``),
    the sampling probabilities of the situations the teacher knows (in ``prompts``; ``None`` when
    none was visited) and the ``targets`` over those situations. There is nothing to learn from
    when ``probs`` is ``None`` or every weight is 0."""
    from bidijax.hints import key64

    k64 = key64(keys).tolist()
    known = np.fromiter((k in prompts for k in k64), bool, len(k64))
    weight = targets(feedback, config.signal, config.min_count, rows=known, baseline=config.baseline,
                     noise_floor=config.noise_floor)  # fmt: skip
    return k64, sampling_probs(feedback.visits, known), weight


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


def draw(probs: np.ndarray, n: int, generator):
    """``n`` situation indices (a ``torch`` tensor) drawn with replacement with ``probs`` from the
    ``torch.Generator`` ``generator`` (how every teacher draws its fine-tuning batches, so both
    backends draw alike)."""
    import torch

    return torch.multinomial(torch.from_numpy(probs), n, replacement=True, generator=generator)


def torch_steps(draws: np.ndarray, weight: np.ndarray, log_probs, reference, optimizer, params, config: FinetuneConfig):
    """The fine-tuning steps of a torch teacher (``HFTeacher.update``); returns ``(history,
    computed)``: per step the summed ``[loss, pg, kl]`` and the situations computed in all.

    ``draws``: ``int [steps, batch]`` indices of the situations of each step; ``weight``: their
    ``targets`` ``[K, A]``; ``log_probs(rows)`` / ``reference(rows)``: ``[n, A]`` log-probs of the
    teacher (with a gradient) and of its frozen reference for situation indices ``rows``. A
    situation drawn ``m`` times in a step is computed once and weighs ``m / batch`` (the same
    loss, fewer passes), ``config.micro_batch_size`` situations per forward/backward pass, the
    gradients accumulated; then clipping (``max_grad_norm``) and one ``optimizer`` step.
    """
    import torch

    history, computed = [], 0
    for idx in draws:
        optimizer.zero_grad(set_to_none=True)
        totals = np.zeros(3)
        rows, times = np.unique(idx, return_counts=True)
        computed += len(rows)
        cuts = range(config.micro_batch_size, len(rows), config.micro_batch_size)
        for part, m in zip(np.split(rows, cuts), np.split(times, cuts)):
            logp = log_probs(part)
            ref = reference(part)
            w = torch.from_numpy(weight[part]).to(logp.device)
            share = torch.from_numpy(m / len(idx)).to(logp)[:, None]
            pg, kl = feedback_loss(logp, ref, w, share, config.objective)
            loss = pg + config.kl_coef * kl
            loss.backward()
            totals += [loss.item(), pg.item(), kl.item()]
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        history.append(totals)
    optimizer.zero_grad(set_to_none=True)
    return history, computed


def feedback_loss(logp, ref, weight, share, objective: str = "unlikelihood"):
    """``(pg, kl)`` of a batch of torch tensors (the objective in the module docstring).

    ``logp``, ``ref``: ``[N, A]`` log-probabilities of the teacher and the frozen reference;
    ``weight``: ``[N, A]`` targets; ``share``: ``[N, 1]`` each situation's weight in the batch.
    ``"unlikelihood"``: positive targets push ``log pi(a)`` up; negative ones push
    ``log(1 - pi(a))`` up, computed as the log-sum-exp of the other actions' log-probabilities:
    exact and with a gradient even when ``pi(a)`` rounds to 1 (a confident wrong hint can always
    be pushed down). ``"reweight"``: ``KL(q || pi)`` with ``q = softmax(log pi (no gradient) +
    weight)``.
    """
    import torch

    if objective == "reweight":
        log_q = torch.log_softmax(logp.detach() + weight, -1)
        pg = (share * log_q.exp() * (log_q - logp)).sum()
    else:
        a = logp.shape[-1]
        eye = torch.eye(a, dtype=torch.bool, device=logp.device)
        log_not = torch.logsumexp(logp.unsqueeze(-2).expand(*logp.shape[:-1], a, a).masked_fill(eye, float("-inf")), -1)
        pg = -(share * (weight.clamp(min=0) * logp + (-weight).clamp(min=0) * log_not)).sum()
    kl = (share * logp.exp() * (logp - ref)).sum()
    return pg, kl


def feedback_loss_jax(logp, ref, weight, share, objective: str = "unlikelihood"):
    """JAX twin of ``feedback_loss`` (jittable; ``objective`` static)."""
    import jax
    import jax.numpy as jnp

    if objective == "reweight":
        log_q = jax.nn.log_softmax(jax.lax.stop_gradient(logp) + weight, -1)
        pg = jnp.sum(share * jnp.exp(log_q) * (log_q - logp))
    else:
        a = logp.shape[-1]
        others = jnp.where(jnp.eye(a, dtype=bool), -jnp.inf, logp[..., None, :])
        log_not = jax.scipy.special.logsumexp(others, -1)
        pg = -jnp.sum(share * (jnp.maximum(weight, 0) * logp + jnp.maximum(-weight, 0) * log_not))
    kl = jnp.sum(share * jnp.exp(logp) * (logp - ref))
    return pg, kl
