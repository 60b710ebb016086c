"""PFGM's objective: regress the normalised Poisson field of a large batch (Xu, Liu, Tegmark,
Jaakkola 2022, "Poisson Flow Generative Models", Algorithm 1 and eq. 8).

The batch y_1..y_B is a set of charges on the z = 0 plane of R^(N+1). Training points
(x_i, z_i) above the first P of them are drawn by `process.training_perturbation`; at each the
field of the batch, with its coefficients normalised to sum to 1,

    G_i = sum_j c_ij (y_j - x_i, -z_i),   c_ij proportional to (|x_i - y_j|^2 + z_i^2)^(-(N+1)/2),

is (E[y | x_i, z_i] - x_i, -z_i) for the empirical posterior of the batch under the D = 1
kernel, i.e. -E / |sum c| with E the batch's field, and the regression target is

    T_i = sqrt(N) G_i / (|G_i| + gamma)

(`process.normalised_field`; gamma > 0 keeps the target smooth where the field vanishes; the
paper: gamma = 5). The loss
is mean_i |f(x_i, z_i) - T_i|^2 over the N + 1 components (reduce="mean": divided by N + 1;
"sum": summed), f the network's (N+1)-vector output. The target is a biased estimate of the
normalised field of the data distribution (the batch stands in for it); the bias falls as B
grows, which is why the paper uses B = 4096 charges for P = 128 training points.

Because the target depends on the whole batch, an example's loss is not a function of its
own key alone (unlike DSM): with gradient accumulation each micro-batch is its own set of
charges.

The model is a `views.Model` whose output is the field (output kind `poisson_field`), called
once on the P training points (train=True, their labels as condition, the dropout key of
`objectives.batch`); a bare per-example callable (x, z) -> [N + 1] is the field itself.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.objectives.batch import batch_arrays, dropout_key
from genjax.processes import views

REDUCTIONS = ("mean", "sum")


def batch_field(x: jax.Array, z: jax.Array, charges: jax.Array) -> jax.Array:
    """G for points x [P, N], z [P] and charges [B, N]: [P, N + 1] (module docstring). The
    coefficients are a softmax of -(N+1)/2 log(|x - y|^2 + z^2), so no power underflows."""
    n = x.shape[1]
    squared = jnp.sum((x[:, None, :] - charges[None]) ** 2, axis=-1) + z[:, None] ** 2
    coefficients = jax.nn.softmax(-0.5 * (n + 1) * jnp.log(squared), axis=1)
    displacement = coefficients @ charges - x
    return jnp.concatenate([displacement, -z[:, None]], axis=1)


def poisson_field_loss(
    model,
    process,
    batch,
    keys: jax.Array,
    *,
    num_perturbed: int | None = None,
    reduce: str = "mean",
) -> jax.Array:
    """The PFGM loss on a batch {"x": x0 [B, ...], "label": [B]?} (module docstring).

    Args:
      model: the field model: a views.Model whose batched output_fn gives [P, N + 1], or a
        bare per-example function (x [*shape], z []) -> [N + 1]; regressed as it is.
      process: a process with `training_perturbation(key, y) -> (x, z)` (PFGMProcess).
      batch: the batch dict (or a bare array x0).
      keys: [B] per-example keys; training point i is drawn from keys[i].
      num_perturbed: P, the first P examples become training points (default: all B); all B
        are charges.
      reduce: "mean" or "sum" over the N + 1 components; the P points are averaged.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; choose one of {REDUCTIONS}")
    x0, labels = batch_arrays(batch)
    size = x0.shape[0]
    if num_perturbed is not None and not (isinstance(num_perturbed, int) and 1 <= num_perturbed <= size):
        raise ValueError(f"num_perturbed={num_perturbed!r} must be an integer in [1, batch size {size}]")
    perturb = getattr(process, "training_perturbation", None)
    if not (callable(perturb) and callable(getattr(process, "normalised_field", None))):
        raise ValueError(f"process {type(process).__name__} has no PFGM training perturbation; the poisson_field "
                         "objective needs process.name='pfgm'")
    num = size if num_perturbed is None else num_perturbed
    x, z = jax.vmap(perturb)(keys[:num], x0[:num])
    flat = x.reshape(num, -1)
    target = jax.lax.stop_gradient(process.normalised_field(batch_field(flat, z, x0.reshape(size, -1))))
    model = model if isinstance(model, views.Model) else views.Model.from_per_example(model, "poisson_field")
    condition = None if labels is None else labels[:num]
    prediction = model.output_fn(x, z, condition, dropout_key=dropout_key(keys), train=True)
    if prediction.shape != target.shape:
        raise ValueError(f"the poisson_field objective regresses {target.shape[1]} numbers per example (the field "
                         f"in N + 1 dimensions), the model gives shape {prediction.shape[1:]}; use "
                         f"model.output='poisson_field' with the network's output_dim={target.shape[1]}")
    squared = jnp.sum((prediction - target) ** 2, axis=1)
    return jnp.mean(squared / target.shape[1] if reduce == "mean" else squared)
