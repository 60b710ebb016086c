"""Inception Score from classifier logits (Salimans et al. 2016, "Improved techniques for
training GANs", sec. 4):

    IS = exp( E_x KL( p(y|x) || p(y) ) ),  p(y) = E_x p(y|x),

computed on each of `num_splits` consecutive equal splits of the samples (p(y) estimated per
split) and reported as (mean, std) over splits, as in the original code (10 splits of 50k).
IS lies in [1, K] for K classes: 1 when every sample gets the same prediction, K when
predictions are confident and spread evenly over the K classes.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_NUM_SPLITS = 10


def _split_score(log_p: jax.Array) -> jax.Array:
    """exp(mean_x KL(p(y|x) || mean_x p(y|x))) for log-probabilities log_p [n, K]."""
    log_marginal = jax.nn.logsumexp(log_p, axis=0) - jnp.log(log_p.shape[0])
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_marginal), axis=-1)
    return jnp.exp(kl.mean())


def inception_score(logits, num_splits: int = DEFAULT_NUM_SPLITS) -> tuple[float, float]:
    """(mean, std) over splits of the IS of logits [N, K] (softmax gives p(y|x)); the last
    N mod num_splits samples are left out so that all splits have the same size."""
    logits = jnp.asarray(logits, jnp.float32)
    size = logits.shape[0] // num_splits
    if logits.ndim != 2 or size < 1:
        raise ValueError(f"inception_score needs logits [N, K] with N >= num_splits={num_splits}, got {logits.shape}")
    scores = np.asarray(_split_scores(logits[:size * num_splits], num_splits), np.float64)
    return float(scores.mean()), float(scores.std())


@functools.partial(jax.jit, static_argnames="num_splits")
def _split_scores(logits: jax.Array, num_splits: int) -> jax.Array:
    """The IS of each of `num_splits` equal consecutive splits of logits [N, K], one program."""
    log_p = jax.nn.log_softmax(logits, axis=-1).reshape(num_splits, logits.shape[0] // num_splits, -1)
    return jax.vmap(_split_score)(log_p)
