"""Conditional flow matching (Lipman et al. 2023, eq. 9; Tong et al. 2024, eq. 14).

    L(theta) = E_t E_{(x_0, x_1) ~ coupling} E_eps || v_theta(x_t, t) - u_t(x_0, x_1, eps) ||^2,

with x_t, u_t the conditional path and velocity of a `FlowMatchingPath` and t ~
process.sample_training_time (uniform on [t_min_train, T]). CFM and the marginal regression
E || v_theta - v_t ||^2 differ by a constant independent of theta, so the minimiser over all
functions is the marginal velocity v_t(x) = E[u_t | x_t = x], and adding delta(x, t) to it
raises the loss by E || delta ||^2 exactly (tests/test_flow_matching.py checks both).

Example i draws its time, source sample and smoothing noise from keys[i]; the coupling then
reorders the source draws over the batch it is given (all of it, or one micro-batch under
gradient accumulation), with a key derived from keys[0]. With coupling="given_pairs" (reflow)
x_1 is the batch's "source" array instead.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.objectives.batch import batch_arrays, dropout_key
from genjax.processes import views

REDUCTIONS = ("mean", "sum")
_COUPLING_STREAM = 7


def conditional_flow_matching_loss(model, process, batch, keys: jax.Array, *, reduce: str = "mean") -> jax.Array:
    """Monte Carlo estimate of the CFM loss on a batch {"x": x0 [B, ...], "label": [B]?}.

    Args:
      model: a `views.Model`; its velocity view is regressed (one call on the batch, with
        train=True, the labels as condition and the dropout key of `objectives.batch`).
      process: a path with `conditional_path`, `source_sample` and `couple` (`FlowMatchingPath`).
      batch: the batch dict (or a bare array x0).
      keys: [B] per-example keys.
      reduce: "mean" averages the squared error over data dimensions, "sum" adds it up.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; choose one of {REDUCTIONS}")
    for method in ("conditional_path", "source_sample", "couple"):
        if not callable(getattr(process, method, None)):
            raise ValueError(f"objective 'cfm' needs a flow-matching path (process.name='flow_matching'); "
                             f"{type(process).__name__} has no {method}")
    x0, labels = batch_arrays(batch)
    velocity = views.batched_velocity_fn(process, model)
    shape = x0.shape[1:]

    def draws(key):
        key_t, key_source, key_eps = jax.random.split(key, 3)
        t = process.sample_training_time(key_t)
        return t, process.source_sample(key_source, shape).astype(x0.dtype), jax.random.normal(key_eps, shape, x0.dtype)

    t, x1, eps = jax.vmap(draws)(keys)
    if getattr(process, "uses_given_pairs", False):
        if not isinstance(batch, dict) or "source" not in batch:
            raise ValueError("coupling='given_pairs' trains on (sample, source) pairs: the batch needs a 'source' "
                             "array beside 'x' (draw them with experiments/reflow.py)")
        x1 = batch["source"].astype(x0.dtype)
    x1 = process.couple(jax.random.fold_in(keys[0], _COUPLING_STREAM), x0, x1)
    x_t, target = jax.vmap(process.conditional_path)(x0, x1, eps, t)
    prediction = velocity(x_t, t, labels, dropout_key=dropout_key(keys), train=True)

    def per_example(prediction, target):
        squared = jnp.sum((prediction - target) ** 2)
        return squared / target.size if reduce == "mean" else squared

    return jnp.mean(jax.vmap(per_example)(prediction, target))
