"""Seeds sharded over 4 (forced host) devices give the numbers of the unsharded program."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from bidijax import envs, hints
    from bidijax.student import PPOConfig, make_train, seed_mesh, shard_seeds, vmap_seeds

    assert len(jax.devices()) == 4
    env = envs.make("gymnax:CartPole-v1")
    train = make_train(PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=1), env)
    init, update = vmap_seeds(train)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    tables = jax.tree.map(lambda x: jnp.stack([x] * 4), hints.empty(1, 2))

    def run(keys, tables):
        runners = init(keys)
        for _ in range(2):
            runners, metrics, _ = update(runners, tables)
        return runners.params, metrics

    plain = run(keys, tables)
    mesh = seed_mesh()
    sharded = run(shard_seeds(keys, mesh), shard_seeds(tables, mesh))
    leaf = jax.tree.leaves(sharded[0])[0]
    assert len(leaf.sharding.device_set) == 4, leaf.sharding
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), plain, sharded)
    print("OK")
    """
)


def test_sharded_equals_unsharded():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")


def test_seed_mesh_errors():
    import pytest
    from bidijax.student import seed_mesh

    with pytest.raises(ValueError, match="num_devices=99 must be between 1 and"):
        seed_mesh(99)
