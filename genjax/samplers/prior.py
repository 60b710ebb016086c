"""Per-example keys and prior draws, shared by every sampler.

Example i of a sample set drawn with `key` owns the key `fold_in(key, i)`, where i is its
*global* index. From it come two independent streams: one for its prior draw x_T ~ p_T and
one for its Brownian noise. Hence the randomness of a sample set for a key does not depend
on the batch size, on how a batch is split into chunks, or on how many processes or
devices draw it: a worker that draws examples [first_index, first_index + n) of the global
set passes `first_index` and gets exactly those draws (the same idea as NVlabs/edm's
per-seed RNG). The prior draws and noise are bitwise identical; the integrated samples are
identical for equal batch shapes and otherwise agree to floating-point rounding, since XLA
may pick different kernels for very different batch sizes (an adaptive solve can turn
such rounding differences into differences of the order of its tolerance).

Because the prior stream is separate from the noise stream, the reverse SDE and the
probability-flow ODE start example i from the same x_T for the same key.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_PRIOR_STREAM = 0
_NOISE_STREAM = 1


def example_keys(key: jax.Array, num_samples: int, first_index: int | jax.Array = 0) -> jax.Array:
    """Keys fold_in(key, first_index + i) for i = 0 .. num_samples - 1 (stacked).

    `first_index` may be traced (e.g. a device's offset inside `shard_map`).
    """
    indices = jnp.asarray(first_index, jnp.uint32) + jnp.arange(num_samples, dtype=jnp.uint32)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def prior_key(example_key: jax.Array) -> jax.Array:
    """The stream an example uses for its prior draw."""
    return jax.random.fold_in(example_key, _PRIOR_STREAM)


def noise_key(example_key: jax.Array) -> jax.Array:
    """The stream an example uses for its Brownian noise."""
    return jax.random.fold_in(example_key, _NOISE_STREAM)


def sample_prior(process, keys: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """One draw x_T ~ p_T of the given per-example shape for each example key: [N, *shape]."""
    return jax.vmap(lambda k: process.prior_sample(prior_key(k), tuple(shape)))(keys)
