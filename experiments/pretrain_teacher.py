"""Pretrain the small default teacher shipped in ``bidijax/teacher/default_model``.

Random-action rollouts of the five BabyAI GoTo levels (JAX, vmapped) give BabyAI-Text prompts.
Each prompt is labelled by a simple common-sense heuristic read from the percept (never from
the BFS oracle), so the teacher is useful but clearly imperfect:

- an object matching the mission is visible: go forward, unless it is level with the agent
  (beside it) or the way ahead is blocked, then turn towards its side;
- none is visible: go forward, unless a wall is 1 step ahead, then turn towards the side whose
  wall is farther (left on ties).

It ignores obstacles on the way and where an unseen target can be, so it agrees with the
oracle's optimal actions only part of the time.

``--label-noise EPS`` (default 0: the labels above, unchanged) builds teachers of controlled,
worse quality (issue 11 item 5): after the heuristic has labelled the deduplicated prompts,
each prompt's label (in sorted prompt order) is, with probability EPS, replaced by a uniformly
random *different* action among the 6 Lamorel actions (left, right, forward, pickup, drop,
toggle; never ``done``, so the corruption bites under both action sets): ``corrupt``, drawn
from a NumPy generator seeded from ``--seed``. Every prompt gets the same two draws whatever
EPS is, so the prompts corrupted at 0.3 are a subset of those corrupted at 0.6 (same seed).

A 2-layer GPT-2-style causal LM with the BabyAI-Text word-level tokenizer is trained on the
deduplicated prompts (AdamW, cross-entropy on the action tokens only), saved with its tokenizer,
and evaluated on held-out random states (other environments of the same rollouts; "unseen":
the fraction of them whose prompt is not in the training set): how often its argmax action
(through ``HFTeacher``) is one of the oracle's optimal actions, the heuristic's own rate, how
often the two agree, and how many situations ``HFTeacher`` scores per second. ``--report FILE``
also writes that table as CSV (with the label noise and the fraction of labels it changed).
``--eval-only`` skips training and evaluates the model already in ``--out`` (e.g. the shipped
one) on the same held-out states. Deterministic for a given ``--seed``; about 5 minutes on 2 CPU
cores.

    python experiments/pretrain_teacher.py [--out DIR] [--label-noise EPS] [--report FILE] [--eval-only]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time

import jax
import numpy as np
import torch

from bidijax import envs
from bidijax.envs import constants as C
from bidijax.envs.perception import Percept
from bidijax.teacher import HFTeacher, default_model_path
from bidijax.teacher.tokenizer import build_tokenizer, save_tokenizer

TASKS = (
    "BabyAI-GoToRedBallNoDists-v0",
    "BabyAI-GoToRedBallGrey-v0",
    "BabyAI-GoToRedBall-v0",
    "BabyAI-GoToObj-v0",
    "BabyAI-GoToLocal-v0",
)
#: the actions a corrupted label is drawn from: BabyAI-Text / Lamorel's 6 (no ``done``)
LAMOREL_ACTIONS = (C.LEFT, C.RIGHT, C.FORWARD, C.PICKUP, C.DROP, C.TOGGLE)


def check_noise(eps) -> float:
    """``eps`` as a float if it is a probability (a real number in [0, 1]), else a one-line ValueError."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"label noise must be a number in [0, 1], got {eps!r}") from None
    if isinstance(eps, bool) or not 0.0 <= value <= 1.0:  # also rejects nan
        raise ValueError(f"label noise must be a number in [0, 1], got {eps!r}")
    return value


def corrupt(labels, eps, rng: np.random.Generator, choices=LAMOREL_ACTIONS) -> np.ndarray:
    """``labels`` (int action indices) with each one, with probability ``eps``, replaced by a
    uniformly random action of ``choices`` other than itself (any of ``choices`` for a label
    outside them). Returns a new int64 array; ``eps = 0`` returns the labels unchanged.

    Every label consumes the same two draws from ``rng`` whatever ``eps`` is (a uniform for
    "corrupt?" and one for "which action?"), so with the same generator state the labels
    corrupted at a smaller ``eps`` are a subset of those at a larger one, corrupted alike.
    """
    eps = check_noise(eps)
    labels = np.asarray(labels, np.int64)
    choices = np.asarray(choices, np.int64)
    if choices.ndim != 1 or len(choices) < 2 or len(np.unique(choices)) != len(choices):
        raise ValueError(f"choices must be at least 2 distinct actions, got {choices.tolist()}")
    k = len(choices)
    match = labels[..., None] == choices
    inside = match.any(axis=-1)
    pos = np.argmax(match, axis=-1)  # the label's index among the choices (where inside)
    u = rng.random(labels.shape)
    pick = rng.integers(0, np.where(inside, k - 1, k))  # among the k - 1 others (k if outside)
    other = choices[pick + (inside & (pick >= pos))]
    return np.where(u < eps, other, labels)


def collect(env_id: str, seed: int, num_envs: int, num_steps: int) -> dict:
    """Situations met by random navigation (forward twice as likely as each turn).

    Returns host arrays of shape ``[num_steps, num_envs, ...]``: ``keys``, ``missions``,
    ``percepts`` (a batched ``Percept``) and the oracle's optimal actions ``oracle`` (bool [..., 7]).
    """
    env = envs.make(env_id)
    probs = np.array([0.25, 0.25, 0.5], np.float32)  # left, right, forward

    def observe(ts):
        state = ts.state
        p = envs.percept(state)
        m = envs.mission_of(state)
        return dict(keys=envs.situation_key(m, p), missions=m, percepts=p, oracle=envs.oracle_actions(state))

    def run(key):
        k_reset, k_act = jax.random.split(key)
        ts = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))

        def body(ts, k):
            rec = jax.vmap(observe)(ts)
            actions = jax.random.choice(k, 3, (num_envs,), p=probs)
            return jax.vmap(env.step)(ts, actions), rec

        _, recs = jax.lax.scan(body, ts, jax.random.split(k_act, num_steps))
        return recs

    return jax.tree.map(np.asarray, jax.device_get(jax.jit(run)(jax.random.PRNGKey(seed))))


def split_envs(recs: dict, first: int) -> tuple[dict, dict]:
    """Environments ``[:first]`` and ``[first:]`` of ``collect``'s output, flattened to rows."""
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    return jax.tree.map(lambda x: flat(x[:, :first]), recs), jax.tree.map(lambda x: flat(x[:, first:]), recs)


def heuristic(missions: np.ndarray, p: Percept) -> np.ndarray:
    """The labelling rule (see the module docstring): action index per row, from the percept only."""
    objects, walls = np.asarray(p.objects), np.asarray(p.walls)
    fwd, right = objects[..., 3], objects[..., 4]
    match = (objects[..., 0] == missions[:, None, 2]) & (objects[..., 1] == missions[:, None, 1])
    nearest = np.argmin(np.where(match, np.abs(fwd) + np.abs(right), 10**6), axis=1)
    rows = np.arange(len(objects))
    f, side = fwd[rows, nearest], right[rows, nearest]
    blocked = (walls[:, 0] == 1) | ((objects[..., 0] > 0) & (fwd == 1) & (right == 0)).any(axis=1)
    turn = np.where(side > 0, C.RIGHT, C.LEFT)
    toward = np.where((side != 0) & ((f <= 0) | blocked), turn, C.FORWARD)
    far = lambda d: np.where(d == 0, 99, d)  # no wall seen on that side: open
    open_side = np.where(far(walls[:, 2]) > far(walls[:, 1]), C.RIGHT, C.LEFT)
    explore = np.where(walls[:, 0] == 1, open_side, C.FORWARD)
    return np.where(match.any(axis=1), toward, explore).astype(np.int64)


def situations(data: dict, rows: np.ndarray) -> tuple:
    p = data["percepts"]
    sub = Percept(walls=p.walls[rows], objects=p.objects[rows], carrying=p.carrying[rows], overflow=p.overflow[rows])
    return data["keys"][rows], data["missions"][rows], sub


def build_model(vocab_size: int, tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=256,
        n_embd=128,
        n_layer=2,
        n_head=4,
        n_inner=512,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def train(model, tok, prompts: list[str], labels: np.ndarray, args) -> float:
    """AdamW on the cross-entropy of the action tokens given the prompt; returns the last loss."""
    prompt_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    action_ids = [tok(" " + a, add_special_tokens=False)["input_ids"] for a in C.ACTION_STRINGS]
    seqs = [p + action_ids[y] for p, y in zip(prompt_ids, labels)]
    starts = [len(p) for p in prompt_ids]
    rng = np.random.default_rng(args.seed)
    steps_per_epoch = math.ceil(len(seqs) / args.batch)
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = min(100, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    )
    model.train()
    step, t0, avg = 0, time.time(), None
    lengths = np.array([len(s) for s in seqs])
    for epoch in range(args.epochs):
        # batches of similar lengths (little padding), in random order
        order = rng.permutation(len(seqs))
        pool = args.batch * 32
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in np.split(order, range(pool, len(order), pool))])
        batches = [order[i : i + args.batch] for i in range(0, len(order), args.batch)]
        for b in rng.permutation(len(batches)):
            rows = batches[b]
            width = max(len(seqs[i]) for i in rows)
            ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            target = torch.full_like(ids, -100)  # only the action tokens are scored
            for r, i in enumerate(rows):
                s = torch.tensor(seqs[i])
                ids[r, : len(s)], mask[r, : len(s)] = s, 1
                target[r, starts[i] : len(s)] = s[starts[i] :]
            loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            value = loss.item()
            avg = value if avg is None else 0.98 * avg + 0.02 * value
            if step % 100 == 0 or step == total:
                print(f"  epoch {epoch + 1} step {step}/{total}  loss {avg:.4f}  ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    return avg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=default_model_path(), help="output model directory (default: the shipped model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--envs", type=int, default=128, help="parallel environments per task (training data)")
    ap.add_argument("--steps", type=int, default=48, help="random steps per environment (training data)")
    ap.add_argument("--eval-envs", type=int, default=64, help="held-out environments per task (evaluation)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument(
        "--label-noise", default="0", metavar="EPS",
        help="probability that a prompt's label is replaced by a random different Lamorel action (default 0)",
    )  # fmt: skip
    ap.add_argument("--report", metavar="FILE", help="also write the held-out table as CSV to FILE")
    ap.add_argument("--eval-only", action="store_true", help="do not train: evaluate the model in --out")
    args = ap.parse_args(argv)
    try:
        noise = check_noise(args.label_noise)
    except ValueError as err:
        ap.error(str(err))
    if args.eval_only and noise:
        ap.error("--eval-only evaluates an existing model: --label-noise does not apply")
    torch.manual_seed(args.seed)
    start = time.time()

    print("collecting situations ...", flush=True)
    train_data, eval_data = {}, {}
    for i, task in enumerate(TASKS):  # held-out states: other environments of the same rollouts
        recs = collect(task, 1000 * args.seed + i, args.envs + args.eval_envs, args.steps)
        train_data[task], eval_data[task] = split_envs(recs, args.envs)

    prompts: dict[str, int] = {}  # deduplicated prompt -> heuristic label (a function of the prompt)
    for task in TASKS:
        d = train_data[task]
        texts = envs.prompt(d["missions"], d["percepts"])
        for text, label in zip(texts, heuristic(d["missions"], d["percepts"])):
            prompts.setdefault(text, int(label))
    n_states = sum(len(d["keys"]) for d in train_data.values())
    print(f"{n_states} training states, {len(prompts)} distinct prompts ({time.time() - start:.0f}s)", flush=True)

    texts = sorted(prompts)  # a deterministic order
    clean = np.array([prompts[t] for t in texts])
    labels = corrupt(clean, noise, np.random.default_rng([args.seed, 1]))
    changed = float(np.mean(labels != clean))
    if args.eval_only:
        print(f"evaluating the model in {args.out} (not trained here)", flush=True)
    else:
        print(f"label noise {noise:g}: {changed:.4f} of the {len(labels)} labels changed", flush=True)
        tok = build_tokenizer()
        model = build_model(len(tok), tok)
        print(f"training a {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M-parameter GPT-2 ...", flush=True)
        train(model, tok, texts, labels, args)
        os.makedirs(args.out, exist_ok=True)
        model.save_pretrained(args.out)
        save_tokenizer(tok, args.out)
        for name in os.listdir(args.out):  # safetensors writes 0600 files
            os.chmod(os.path.join(args.out, name), 0o644)
        size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
        print(f"saved to {args.out} ({size / 1e6:.2f} MB)", flush=True)

    # evaluation on held-out random states, through the same loading path as any user
    teacher = HFTeacher(args.out)
    held_out = {}
    for task in TASKS:
        d = eval_data[task]
        rows = np.flatnonzero(d["oracle"].any(axis=1))  # states with an optimal action
        held_out[task] = situations(d, rows) + (d["oracle"][rows],)
    # speed: every distinct held-out situation scored once, by a teacher with an empty cache
    keys = np.concatenate([h[0] for h in held_out.values()])
    _, first = np.unique(keys.view(np.uint64)[:, 0], return_index=True)
    missions = np.concatenate([h[1] for h in held_out.values()])[first]
    ps = [h[2] for h in held_out.values()]
    percepts = Percept(*(np.concatenate([getattr(p, f) for p in ps])[first] for f in ("walls", "objects", "carrying", "overflow")))
    t0 = time.time()
    teacher.score(keys[first], missions, percepts)
    speed = len(first) / (time.time() - t0)

    print()
    if not args.eval_only:
        print(f"label noise {noise:g} (corrupted fraction of the training labels {changed:.4f})")
    print(f"{'task':30s} {'states':>7s} {'unseen':>7s} {'teacher=oracle':>15s} {'heuristic=oracle':>17s} {'teacher=heuristic':>18s}")
    table = []
    for task, (keys, missions, percepts, oracle) in held_out.items():
        _, probs = teacher.score(keys, missions, percepts)  # cached above
        pick, heur = probs.argmax(axis=1), heuristic(missions, percepts)
        idx = np.arange(len(keys))
        unseen = np.mean([teacher.prompt_of(k) not in prompts for k in keys])
        row = dict(
            task=task, states=len(keys), unseen=unseen, teacher_oracle=oracle[idx, pick].mean(),
            heuristic_oracle=oracle[idx, heur].mean(), teacher_heuristic=(pick == heur).mean(),
        )  # fmt: skip
        table.append(row)
        print(
            f"{task:30s} {row['states']:7d} {unseen:7.3f} {row['teacher_oracle']:15.3f} "
            f"{row['heuristic_oracle']:17.3f} {row['teacher_heuristic']:18.3f}"
        )
    print(
        f"HFTeacher scoring speed: {speed:.0f} situations/s ({len(first)} distinct situations, "
        f"batch_size {teacher.batch_size}, {torch.get_num_threads()} torch threads)"
    )
    if args.report:
        os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
        with open(args.report, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["model", "seed", "label_noise", "corrupted_fraction", *table[0]])
            w.writeheader()
            for row in table:
                extra = dict(model=args.out, seed=args.seed, label_noise=noise, corrupted_fraction="" if args.eval_only else changed)
                w.writerow({**extra, **{k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()}})
        print(f"held-out table written to {args.report}")
    print(f"total time {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
