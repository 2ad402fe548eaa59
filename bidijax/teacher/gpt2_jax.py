"""A JAX port of GPT-2 (Hugging Face ``GPT2LMHeadModel``) for scoring action strings and for the
fine-tuning step, stackable over seeds.

``params_from_torch(model)`` copies a transformers GPT-2's weights into a pytree of numpy arrays;
``params_to_torch(params, model)`` writes them back (checkpoints stay Hugging Face files).
``action_logprobs(params, spec, prompt_ids, prompt_mask, action_ids, action_mask)`` gives
``log p(action tokens | prompt)`` ``[N, A]``: the prompts (left-padded) run once, and every
action's tokens run on top of the prompt's keys and values, as ``HFTeacher``'s causal scorer does
with torch's key/value cache. Pure functions: ``jax.vmap`` them over a leading seed axis of
``params`` to run every seed's teacher in one program.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NEG = -1e9  # additive attention mask (finite: a fully masked row gives a uniform, unused result)


class Spec(NamedTuple):
    """The static shape of a GPT-2: heads, layer-norm epsilon, activation."""

    n_head: int
    eps: float
    activation: str


def spec_of(config) -> Spec:
    """``Spec`` of a transformers ``GPT2Config``; ``ValueError`` for what the port does not cover."""
    act = getattr(config, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu", "gelu_pytorch_tanh", "relu"):
        raise ValueError(f"the JAX GPT-2 port does not support activation_function={act!r}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if getattr(config, flag, False):
            raise ValueError(f"the JAX GPT-2 port does not support {flag}=True")
    if not getattr(config, "scale_attn_weights", True) or not getattr(config, "tie_word_embeddings", True):
        raise ValueError("the JAX GPT-2 port needs scale_attn_weights=True and tied word embeddings")
    return Spec(int(config.n_head), float(config.layer_norm_epsilon), act)


def params_from_torch(model) -> dict:
    """The weights of a ``GPT2LMHeadModel`` as nested dicts of float32 numpy arrays."""
    sd = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    pre = "transformer."
    layers = []
    i = 0
    while f"{pre}h.{i}.ln_1.weight" in sd:
        h = lambda name: sd[f"{pre}h.{i}.{name}"]
        layers.append(
            {
                "ln_1": {"g": h("ln_1.weight"), "b": h("ln_1.bias")},
                "attn": {"w": h("attn.c_attn.weight"), "b": h("attn.c_attn.bias")},
                "proj": {"w": h("attn.c_proj.weight"), "b": h("attn.c_proj.bias")},
                "ln_2": {"g": h("ln_2.weight"), "b": h("ln_2.bias")},
                "fc": {"w": h("mlp.c_fc.weight"), "b": h("mlp.c_fc.bias")},
                "out": {"w": h("mlp.c_proj.weight"), "b": h("mlp.c_proj.bias")},
            }
        )
        i += 1
    return {
        "wte": sd[f"{pre}wte.weight"],
        "wpe": sd[f"{pre}wpe.weight"],
        "layers": layers,
        "ln_f": {"g": sd[f"{pre}ln_f.weight"], "b": sd[f"{pre}ln_f.bias"]},
    }


def params_to_torch(params: dict, model) -> None:
    """Write ``params`` (one seed, as from ``params_from_torch``) into ``model`` in place."""
    import torch

    p = jax.tree.map(np.asarray, params)
    names = {"transformer.wte.weight": p["wte"], "transformer.wpe.weight": p["wpe"]}
    names.update({"transformer.ln_f.weight": p["ln_f"]["g"], "transformer.ln_f.bias": p["ln_f"]["b"]})
    parts = {"ln_1": "ln_1", "attn": "attn.c_attn", "proj": "attn.c_proj", "ln_2": "ln_2", "fc": "mlp.c_fc", "out": "mlp.c_proj"}
    for i, layer in enumerate(p["layers"]):
        for key, torch_name in parts.items():
            w, b = ("g", "b") if key.startswith("ln") else ("w", "b")
            names[f"transformer.h.{i}.{torch_name}.weight"] = layer[key][w]
            names[f"transformer.h.{i}.{torch_name}.bias"] = layer[key][b]
    state = model.state_dict()
    with torch.no_grad():
        for name, value in names.items():
            state[name].copy_(torch.from_numpy(np.array(value, dtype=np.float32)))


def _layer_norm(x, p, eps):
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["g"] + p["b"]


def _act(x, name):
    if name == "relu":
        return jax.nn.relu(x)
    return jax.nn.gelu(x, approximate=name != "gelu")


def _block(layer, x, positions_mask, spec: Spec, prefix=None):
    """One transformer block over ``x [B, T, E]``; ``positions_mask [B, T(+P)]`` marks real keys.

    With ``prefix = (k, v)`` (``[B, P, H, D]``), the new tokens attend to the prefix's keys
    first (all of them, as masked by the first ``P`` columns of the mask) and causally to their
    own. Returns ``(x, (k, v))`` of the new tokens.
    """
    b, t, e = x.shape
    hd = e // spec.n_head
    h = _layer_norm(x, layer["ln_1"], spec.eps)
    qkv = h @ layer["attn"]["w"] + layer["attn"]["b"]
    q, k, v = (z.reshape(b, t, spec.n_head, hd) for z in jnp.split(qkv, 3, axis=-1))
    causal = jnp.tril(jnp.ones((t, t), bool))
    if prefix is not None:
        pk, pv = prefix
        keys, values = jnp.concatenate([pk, k], 1), jnp.concatenate([pv, v], 1)
        allowed = jnp.concatenate([jnp.ones((t, pk.shape[1]), bool), causal], 1)
    else:
        keys, values, allowed = k, v, causal
    allowed = allowed[None] & positions_mask[:, None, :]  # [B, T, Tk]
    scores = jnp.einsum("bthd,bshd->bhts", q, keys) / np.sqrt(hd)
    scores = jnp.where(allowed[:, None], scores, NEG)
    attn = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhts,bshd->bthd", attn, values).reshape(b, t, e)
    x = x + out @ layer["proj"]["w"] + layer["proj"]["b"]
    h = _layer_norm(x, layer["ln_2"], spec.eps)
    x = x + _act(h @ layer["fc"]["w"] + layer["fc"]["b"], spec.activation) @ layer["out"]["w"] + layer["out"]["b"]
    return x, (k, v)


def _embed(params, ids, positions):
    # one-hot matmuls: on XLA:CPU their gradient is far cheaper than a gather's scatter-add
    vocab, n_pos = params["wte"].shape[0], params["wpe"].shape[0]
    return jax.nn.one_hot(ids, vocab, dtype=params["wte"].dtype) @ params["wte"] + jax.nn.one_hot(
        positions, n_pos, dtype=params["wpe"].dtype
    ) @ params["wpe"]


def _logits(params, x, spec: Spec):
    return _layer_norm(x, params["ln_f"], spec.eps) @ params["wte"].T


def action_logprobs(params, spec: Spec, prompt_ids, prompt_mask, action_ids, action_mask):
    """``float32 [N, A]``: sum of the action tokens' log-probabilities after each prompt.

    ``prompt_ids``/``prompt_mask``: ``int [N, Lp]`` left-padded prompts; ``action_ids`` /
    ``action_mask``: ``int [A, La]`` right-padded action tokens (each action >= 1 token).
    """
    n, lp = prompt_ids.shape
    a, la = action_ids.shape
    mask = prompt_mask.astype(bool)
    positions = jnp.maximum(jnp.cumsum(prompt_mask, -1) - 1, 0)
    x = _embed(params, prompt_ids, positions)
    caches = []
    for layer in params["layers"]:
        x, kv = _block(layer, x, mask, spec)
        caches.append(kv)
    last = jax.nn.log_softmax(_logits(params, x[:, -1], spec), -1)  # [N, V]
    first = last[:, action_ids[:, 0]]  # [N, A]
    if la == 1:
        return first
    # the other action tokens: tokens 0..La-2 of every action on the prompt's keys and values
    rep = lambda z: jnp.repeat(z, a, axis=0)  # rows prompt-major, action-minor (i * a + j)
    act_in = jnp.tile(action_ids[:, :-1], (n, 1))  # [N*A, La-1]
    act_mask = jnp.tile(action_mask, (n, 1)).astype(bool)
    start = rep(jnp.sum(prompt_mask, -1))
    pos = start[:, None] + jnp.arange(la - 1)[None]
    y = _embed(params, act_in, pos)
    full_mask = jnp.concatenate([rep(mask), act_mask[:, :-1]], 1)
    for layer, (k, v) in zip(params["layers"], caches):
        y, _ = _block(layer, y, full_mask, spec, prefix=(rep(k), rep(v)))
    logp = jax.nn.log_softmax(_logits(params, y, spec), -1)  # [N*A, La-1, V]
    target = jnp.tile(action_ids[:, 1:], (n, 1))
    picked = jnp.take_along_axis(logp, target[..., None], -1)[..., 0]
    rest = jnp.sum(picked * act_mask[:, 1:], -1).reshape(n, a)
    return first + rest
