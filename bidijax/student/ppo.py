"""PureJaxRL-style PPO for navix-contract environments, reading hint tables inside jit.

``make_train(config, env)`` returns ``Train(init, update, collect)``:

* ``init(key, hyper=None) -> RunnerState``: network parameters, optimiser state, environments,
  RNG, and the numeric hyper-parameters (``Hyper``: learning rate, clip, coefficients, gamma,
  lambda, beta schedule) as traced values, so one compiled program runs students with different
  values side by side (a sweep's cells, vmapped like seeds).
* ``update(runner_state, hint_table) -> (runner_state, metrics, feedback)``: one iteration,
  ``num_steps`` steps in ``num_envs`` environments, then ``update_epochs`` PPO epochs over
  ``num_minibatches`` minibatches. Pure and jittable; ``jax.vmap`` both functions to run
  independent seeds in one program (each seed with its own hint table).
* ``collect(runner_state, hint_table) -> Rollout``: the rollout part of ``update`` alone (the
  trajectory, its advantages and TD errors), for inspection and tests.

With the BFS oracle tracked (by default when a table is read), ``update`` does not run it at
every step: the rollout keeps each step's scene, and the oracle runs afterwards only on the miss
buffer's rows (``MissBuffer.oracle``, exact: the state where each missed situation was first met)
and on ``config.agreement_samples`` hit steps drawn uniformly for the teacher-oracle agreement
metric (every hit step when there are fewer). ``collect`` still runs it at every step.

Navix resets lazily: the step taken from a terminal timestep only resets the environment and
ignores the action. Such steps are masked out of every loss, statistic and feedback sum; a
truncated episode bootstraps from the value of its true final observation, a terminated one
from zero.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from .. import feedback as fb
from .. import hints as hn
from ..envs import constants as C
from ..envs.oracle import oracle_actions
from ..envs.perception import percept, situation_key
from ..envs.scene import Scene, mission_of, scene_of
from .config import TRACED, PPOConfig
from . import shuffle
from .networks import ActorCritic

LOG_EPS = 1e-8


class Hyper(struct.PyTreeNode):
    """The student's numeric hyper-parameters as traced float32 scalars (``config.TRACED``)."""

    lr: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    clip_eps: jax.Array
    ent_coef: jax.Array
    vf_coef: jax.Array
    max_grad_norm: jax.Array
    beta_start: jax.Array
    beta_end: jax.Array
    beta_anneal_frac: jax.Array
    prior_weight: jax.Array
    distill_temperature: jax.Array


def hyper_of(config: PPOConfig, **overrides) -> Hyper:
    """``config``'s traced fields (``overrides`` on top) as a ``Hyper`` of float32 scalars."""
    values = {name: overrides.get(name, getattr(config, name)) for name in TRACED}
    return Hyper(**{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


class RunnerState(struct.PyTreeNode):
    params: Any
    opt_state: Any
    timestep: Any
    key: jax.Array
    update_idx: jax.Array  # int32: updates done so far
    hyper: Hyper  # this student's numeric hyper-parameters (one per seed / sweep cell)


class Transition(NamedTuple):
    obs: Any
    action: jax.Array
    logp_behaviour: jax.Array
    value: jax.Array
    reward: jax.Array
    valid: jax.Array  # a real step (not the reset step that follows an episode's end)
    next_type: jax.Array  # step type of the next timestep: 0 transition, 1 truncated, 2 terminated
    next_return: jax.Array
    next_t: jax.Array
    teacher: jax.Array  # teacher probabilities (uniform on a miss)
    hit: jax.Array
    row: jax.Array
    key: jax.Array
    logits: jax.Array  # the student's logits at the step
    agree: jax.Array  # teacher argmax is an oracle action (when an oracle is tracked)
    has_oracle: jax.Array


class Batch(NamedTuple):
    """What the PPO loss reads of a step (flattened ``[batch]``); ``teacher`` / ``hit`` only when
    the student reads a table."""

    obs: Any
    action: jax.Array
    logp_behaviour: jax.Array
    value: jax.Array
    valid: jax.Array
    advantage: jax.Array
    target: jax.Array
    teacher: Any = None
    hit: Any = None


class Rollout(NamedTuple):
    timestep: Any  # environments after the rollout
    key: jax.Array
    traj: Transition  # time-major [num_steps, num_envs]
    percepts: Any  # (Percept, mission, oracle actions) per step; None where not computed
    advantages: jax.Array
    td_errors: jax.Array


class Train(NamedTuple):
    init: Any
    update: Any
    collect: Any
    rollout: Any = None  # (runner, table) -> (Rollout, MissBuffer): the first half of ``update``
    learn: Any = None  # (runner, Rollout, table) -> (runner, metrics, feedback): the second half


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(x.dtype)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def gae(rewards, values, next_values, next_type, gamma: float, lam: float):
    """Generalised advantage estimates over time-major arrays ``[T, ...]``.

    ``next_type`` is the step type of the timestep each transition leads to: the TD error
    bootstraps unless the episode terminated, and the recursion stops at any episode end.
    Returns ``(advantages, td_errors)``.
    """
    terminal = (next_type == 2).astype(values.dtype)
    ended = (next_type > 0).astype(values.dtype)
    delta = rewards + gamma * next_values * (1.0 - terminal) - values

    def back(carry, x):
        d, e = x
        adv = d + gamma * lam * (1.0 - e) * carry
        return adv, adv

    _, adv = jax.lax.scan(back, jnp.zeros_like(values[0]), (delta, ended), reverse=True)
    return adv, delta


def beta_schedule(config: PPOConfig, update_idx: jax.Array, hyper: Hyper | None = None) -> jax.Array:
    """Distillation weight of update ``update_idx`` (0-based): linear from ``beta_start`` to
    ``beta_end`` over the first ``beta_anneal_frac * num_updates`` updates, ``beta_end`` after
    (values from ``hyper``, by default ``config``'s)."""
    h = hyper_of(config) if hyper is None else hyper
    span = h.beta_anneal_frac * config.num_updates
    frac = jnp.where(span > 0, jnp.clip(update_idx / jnp.maximum(span, 1e-30), 0.0, 1.0), 1.0)
    return h.beta_start + frac * (h.beta_end - h.beta_start)


def distill_target(teacher: jax.Array, temperature: jax.Array) -> jax.Array:
    """The distribution the student distils: the hint ``softmax(log p / T)`` at ``temperature``
    (exactly the hint at T = 1; towards its argmax as T falls)."""
    sharp = jax.nn.softmax(jnp.log(teacher + LOG_EPS) / temperature, axis=-1)
    return jnp.where(temperature == 1.0, teacher, sharp)


def optimizer(config: PPOConfig, h: Hyper) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam at ``h.lr`` (linearly to 0 over the run with ``anneal_lr``).
    The state's structure does not depend on ``h``'s values."""
    lr = h.lr
    if config.anneal_lr:
        lr = optax.linear_schedule(h.lr, 0.0, config.num_updates * config.update_epochs * config.num_minibatches)
    return optax.chain(optax.clip_by_global_norm(h.max_grad_norm), optax.adam(lr, eps=1e-5))


def make_train(config: PPOConfig, env, track_oracle: bool | None = None):
    """Build ``init`` and ``update`` for ``env`` (see the module docstring)."""
    num_actions = int(env.action_space.n) if hasattr(env.action_space, "n") else C.NUM_ACTIONS
    net = ActorCritic(num_actions=num_actions, hidden=config.hidden)
    apply = jax.vmap(net.apply, in_axes=(None, 0))
    use_table = config.hint_mode != "none"
    # the miss buffer holds every distinct situation of a rollout unless configured smaller
    miss_size = config.miss_buffer_size or config.num_envs * config.num_steps
    if track_oracle is None:
        track_oracle = use_table
    n_mb = config.num_minibatches

    def init(key: jax.Array, hyper: Hyper | None = None) -> RunnerState:
        """A fresh student; ``hyper`` (default: ``config``'s values) rides along in its state."""
        hyper = hyper_of(config) if hyper is None else hyper
        k_net, k_env, k_run = jax.random.split(key, 3)
        timestep = jax.vmap(env.reset)(jax.random.split(k_env, config.num_envs))
        one_obs = jax.tree.map(lambda x: x[0], timestep.observation)
        params = net.init(k_net, one_obs)
        opt_state = optimizer(config, hyper).init(params)
        return RunnerState(params, opt_state, timestep, k_run, jnp.asarray(0, jnp.int32), hyper)

    def behaviour_logits(logits, teacher, hit, h: Hyper):
        log_t = jnp.log(teacher + LOG_EPS)
        if config.hint_mode == "prior":
            return jnp.where(hit[:, None], logits + h.prior_weight * log_t, logits)
        if config.hint_mode == "teacher_policy":
            return log_t
        return logits

    def rollout(runner: RunnerState, table: hn.HintTable, oracle_per_step: bool = True):
        """The trajectory. With the oracle tracked and ``oracle_per_step`` (``collect``) the BFS
        oracle runs at every step (``percepts[2]``); without (``update``) each step's scene is kept
        instead (``percepts[2]``, with ``percepts[1]`` the missions) for the oracle to run after
        the scan on the few steps that need it (``_oracle_at``)."""

        def step(carry, _):
            ts, key = carry
            key, k_act = jax.random.split(key)
            logits, value = apply(runner.params, ts.observation)
            capacity = table.capacity
            if use_table:
                p = jax.vmap(lambda s: percept(s, config.max_objects))(ts.state)
                mission = jax.vmap(mission_of)(ts.state)
                skey = jax.vmap(situation_key)(mission, p)
                teacher, hit, row = hn.lookup(table, skey)
            else:
                p, mission = None, None
                skey = jnp.zeros((config.num_envs, 2), jnp.uint32)
                teacher = jnp.full((config.num_envs, num_actions), 1.0 / num_actions)
                hit = jnp.zeros(config.num_envs, bool)
                row = jnp.full(config.num_envs, capacity, jnp.int32)
            agree = has_oracle = jnp.zeros(config.num_envs, bool)
            if track_oracle and oracle_per_step:
                best = jax.vmap(oracle_actions)(ts.state)[:, :num_actions]
                agree = jnp.take_along_axis(best, jnp.argmax(teacher, -1)[:, None], -1)[:, 0]
                has_oracle = jnp.any(best, axis=-1)
            elif track_oracle:
                scene = jax.vmap(scene_of)(ts.state)
                best = (scene.cells, scene.agent_pos, scene.agent_dir)
                mission = jax.vmap(mission_of)(ts.state) if mission is None else mission
            else:
                best = None
            beh = behaviour_logits(logits, teacher, hit, runner.hyper)
            action = jax.random.categorical(k_act, beh)
            logp = jnp.take_along_axis(jax.nn.log_softmax(beh), action[:, None], -1)[:, 0]
            nts = jax.vmap(env.step)(ts, action)
            tr = Transition(
                obs=ts.observation,
                action=action,
                logp_behaviour=logp,
                value=value,
                reward=nts.reward.astype(jnp.float32),
                valid=ts.step_type == 0,
                next_type=nts.step_type,
                next_return=nts.info["return"],
                next_t=nts.t,
                teacher=teacher,
                hit=hit,
                row=row,
                key=skey,
                logits=logits,
                agree=agree,
                has_oracle=has_oracle,
            )
            return (nts, key), (tr, (p, mission, best))

        (ts, key), (traj, extra) = jax.lax.scan(step, (runner.timestep, runner.key), None, config.num_steps)
        _, last_value = apply(runner.params, ts.observation)
        next_values = jnp.concatenate([traj.value[1:], last_value[None]], axis=0)
        h = runner.hyper
        adv, td = gae(traj.reward, traj.value, next_values, traj.next_type, h.gamma, h.gae_lambda)
        return Rollout(ts, key, traj, extra, adv, td)

    def loss_fn(params, mb: Batch, beta, h: Hyper):
        adv, targets = mb.advantage, mb.target
        logits, value = apply(params, mb.obs)
        logp_all = jax.nn.log_softmax(logits)
        logp = jnp.take_along_axis(logp_all, mb.action[:, None], -1)[:, 0]
        m = mb.valid
        mean, var = masked_mean(adv, m), masked_mean(jnp.square(adv - masked_mean(adv, m)), m)
        adv_n = (adv - mean) / (jnp.sqrt(var) + 1e-8)
        log_ratio = logp - mb.logp_behaviour
        ratio = jnp.exp(log_ratio)
        pg = -jnp.minimum(ratio * adv_n, jnp.clip(ratio, 1 - h.clip_eps, 1 + h.clip_eps) * adv_n)
        pg_loss = masked_mean(pg, m)
        v_err = jnp.square(value - targets)
        if config.clip_value:
            v_clip = mb.value + jnp.clip(value - mb.value, -h.clip_eps, h.clip_eps)
            v_err = jnp.maximum(v_err, jnp.square(v_clip - targets))
        v_loss = 0.5 * masked_mean(v_err, m)
        probs = jnp.exp(logp_all)
        entropy = masked_mean(-jnp.sum(probs * logp_all, -1), m)
        if use_table:
            ce = -jnp.sum(distill_target(mb.teacher, h.distill_temperature) * logp_all, -1)
            distill = masked_mean(ce * mb.hit, m)
        else:  # no table: no hit, no distillation term
            distill = jnp.zeros((), logp_all.dtype)
        total = pg_loss + h.vf_coef * v_loss - h.ent_coef * entropy
        if config.hint_mode == "distill":
            total = total + beta * distill
        stats = {
            "policy_loss": pg_loss,
            "value_loss": v_loss,
            "entropy": entropy,
            "distill_loss": distill,
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, m),
            "clip_frac": masked_mean((jnp.abs(ratio - 1.0) > h.clip_eps).astype(jnp.float32), m),
        }
        return total, stats

    def collect_rollout(runner: RunnerState, table: hn.HintTable):
        """The first half of ``update``: the rollout and the distinct situations it missed."""
        ro = rollout(runner, table, oracle_per_step=False)
        p, mission, scenes = ro.percepts
        misses = None
        if use_table:
            oracle = _oracle_at(scenes, mission, num_actions) if track_oracle else None
            misses = hn.collect_misses(ro.traj.key, ro.traj.valid & ~ro.traj.hit, mission, p, miss_size, oracle=oracle)
        return ro, misses

    def learn(runner: RunnerState, ro: Rollout, table: hn.HintTable):
        """The second half of ``update``: PPO epochs on the rollout, reading hints from ``table``.

        The rollout's situations are looked up again in ``table``: when the host has scored the
        rollout's misses in between (``bidijax.loop`` with ``score_first``), the distillation
        loss and the feedback cover the steps that missed while acting.
        """
        ts, key, traj, (p, mission, scenes), adv, td = ro
        acting = jnp.sum(traj.valid & traj.hit) / jnp.maximum(jnp.sum(traj.valid), 1)
        if use_table:
            teacher, hit, row = hn.lookup(table, traj.key)
            traj = traj._replace(teacher=teacher, hit=hit, row=row)
        targets = adv + traj.value
        h = runner.hyper
        beta = beta_schedule(config, runner.update_idx, h)
        tx = optimizer(config, h)

        batch_size = config.num_steps * config.num_envs
        flat = lambda x: x.reshape((batch_size,) + x.shape[2:])
        batch = Batch(
            traj.obs, traj.action, traj.logp_behaviour, traj.value, traj.valid, adv, targets,
            traj.teacher if use_table else None, traj.hit if use_table else None,
        )
        data = jax.tree.map(flat, batch)

        def epoch(carry, _):
            params, opt_state, key = carry
            key, k_perm = jax.random.split(key)
            # a fresh random partition of the batch into minibatches every epoch (see shuffle.py)
            perm = shuffle.permutation(k_perm, batch_size).reshape(n_mb, batch_size // n_mb)

            def minibatch(carry, idx):
                params, opt_state = carry
                mb = jax.tree.map(lambda x: x[idx], data)
                (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb, beta, h)
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), stats

            (params, opt_state), stats = jax.lax.scan(minibatch, (params, opt_state), perm)
            return (params, opt_state, key), stats

        (params, opt_state, key), stats = jax.lax.scan(
            epoch, (runner.params, runner.opt_state, key), None, config.update_epochs
        )
        new_runner = RunnerState(params, opt_state, ts, key, runner.update_idx + 1, h)

        feedback = fb.aggregate(
            traj.row, traj.action, td, adv, traj.valid & traj.hit, table.capacity, num_actions
        )
        agreement = None  # not tracked: 0, as masked_mean over no steps
        if track_oracle:
            oracle_at = _oracle_at(scenes, mission, num_actions)
            agreement = _agreement(oracle_at, traj, jax.random.fold_in(runner.key, 0xA9), config.agreement_samples)
        if use_table:  # what the table still misses (all of the rollout's misses, unless scored in between)
            misses = hn.collect_misses(
                traj.key, traj.valid & ~traj.hit, mission, p, miss_size,
                oracle=oracle_at if track_oracle else None,
            )
            feedback = feedback.replace(misses=misses)
        ev = explained_variance(traj.value, targets, traj.valid)
        metrics = _metrics(traj, stats, beta, new_runner.update_idx, config, agreement, ev)
        metrics["acting_coverage"] = acting  # hints found while acting (what prior/teacher_policy use)
        return new_runner, metrics, feedback

    def update(runner: RunnerState, table: hn.HintTable):
        return learn(runner, rollout(runner, table, oracle_per_step=False), table)

    return Train(init, update, rollout, collect_rollout, learn)


ORACLE_CHUNK = 128  # BFS oracle rows per step of ``_oracle_at``'s loop


def _oracle_at(scenes, missions, num_actions: int):
    """``f(src, filled) -> bool[n, num_actions]``: the BFS oracle at the flat (time-major) steps
    ``src`` of a rollout, from the scenes and missions it kept; rows not ``filled`` are False.
    (A 6-action set drops ``done``, which the oracle never calls optimal.)

    The rows run in chunks of ``ORACLE_CHUNK`` up to the last filled one, in a loop whose trip
    count is data-dependent: a miss buffer of 4,096 rows with 300 filled costs 3 chunks, and none
    costs nothing. (A ``lax.cond`` would not do: under the seed ``vmap`` its predicate is batched
    and both branches run, i.e. the BFS on every row.)"""
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    cells, pos, direction = (flat(x) for x in scenes)
    missions = flat(missions)

    def at(src, filled):
        n = len(src)
        chunk = min(ORACLE_CHUNK, n)
        chunks = -(-n // chunk)
        src = jnp.pad(src, (0, chunks * chunk - n))
        used = jnp.max(jnp.where(filled, jnp.arange(n), -1)) + 1  # rows up to the last filled one

        def body(i, out):
            rows = jax.lax.dynamic_slice_in_dim(src, i * chunk, chunk)
            scene = Scene(cells[rows], pos[rows], direction[rows], jnp.zeros((chunk, 3), jnp.uint8))
            best = jax.vmap(oracle_actions)(scene, missions[rows])[:, :num_actions]
            return jax.lax.dynamic_update_slice_in_dim(out, best, i * chunk, 0)

        out = jax.lax.fori_loop(0, -(-used // chunk), body, jnp.zeros((chunks * chunk, num_actions), bool))
        return out[:n] & filled[:, None]

    return at


def _agreement(oracle_at, traj: Transition, key, samples: int):
    """Fraction of hit steps whose teacher argmax is an oracle action (over those with one).

    Measured on ``samples`` hit steps drawn uniformly without replacement (a random order of the
    batch, its first ``samples`` hit steps); on every hit step when there are fewer, or when
    ``samples`` is 0.
    """
    hit = (traj.valid & traj.hit).reshape(-1)
    n = hit.shape[0]
    size = n if samples == 0 else min(samples, n)
    order = shuffle.permutation(key, n) if size < n else jnp.arange(n)
    (pos,) = jnp.nonzero(hit[order], size=size, fill_value=0)
    src = order[pos]
    filled = jnp.arange(size) < jnp.sum(hit)
    best = oracle_at(src, filled)
    teacher = traj.teacher.reshape((n, -1))[src]
    agree = jnp.take_along_axis(best, jnp.argmax(teacher, -1)[:, None], -1)[:, 0]
    return masked_mean(agree.astype(jnp.float32), filled & jnp.any(best, -1))


def explained_variance(values, targets, mask) -> jax.Array:
    """``1 - Var(targets - values) / Var(targets)`` over the ``mask``ed steps (the critic's fit)."""
    var = lambda x: masked_mean(jnp.square(x - masked_mean(x, mask)), mask)
    return 1.0 - var(targets - values) / jnp.maximum(var(targets), 1e-8)


def _metrics(traj: Transition, stats: dict, beta, update_idx, config: PPOConfig, agreement=None, ev=None) -> dict:
    valid = traj.valid
    ended = valid & (traj.next_type > 0)
    success = ended & (traj.next_type == 2) & (traj.reward > 0)
    episodes = jnp.sum(ended)
    hits = valid & traj.hit
    out = {k: jnp.mean(v) for k, v in stats.items()}
    out.update(
        frames=update_idx * config.frames_per_update,
        episodes=episodes,
        # the behaviour policy's episodes that ended within the rollout (biased towards short
        # ones early on; the student alone is measured by ``student.evaluate``)
        behaviour_success=jnp.sum(success) / jnp.maximum(episodes, 1),
        behaviour_return=masked_mean(traj.next_return, ended),
        behaviour_length=masked_mean(traj.next_t.astype(jnp.float32), ended),
        hint_coverage=jnp.sum(hits) / jnp.maximum(jnp.sum(valid), 1),
        kl_teacher_student=masked_mean(
            jnp.sum(traj.teacher * (jnp.log(traj.teacher + LOG_EPS) - jax.nn.log_softmax(traj.logits)), -1), hits
        ),
        teacher_oracle_agreement=(
            masked_mean(traj.agree.astype(jnp.float32), hits & traj.has_oracle) if agreement is None else agreement
        ),
        beta=beta,
        explained_variance=ev,
    )
    return out
