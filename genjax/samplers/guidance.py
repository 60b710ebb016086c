"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper on a model, for every sampler.

With guidance weight w >= 0 the guided output for class c is

    y_w(x, t, c) = (1 + w) y(x, t, c) - w y(x, t, null),

Ho & Salimans' eq. (6) convention: w = 0 is the plain conditional model, and EDM's /
Karras et al.'s "guidance scale" is 1 + w. `null` is the label that label dropout trains: a
conditional network called with condition=None (genjax/nets/unet/conditioning.py: a zero
one-hot, the label layer's bias alone).

The combination is taken in the network's own output space. For the output kinds whose
score is affine in the output with coefficients that depend only on (x, t) (score, noise,
denoised, velocity; `views.OUTPUT_KINDS`), it equals the same combination of scores,

    s_w(x, t, c) = (1 + w) s(x, t | c) - w s(x, t),

i.e. the score of p_t(x | c)^{1+w} p_t(x)^{-w}, so every sampler that takes a score or a
velocity (reverse SDE, predictor-corrector, probability flow, DDIM, EDM Heun) is guided by
handing it the wrapped model; none of them knows about guidance. A Poisson-field output is
normalised per example (not affine) and is refused.

Cost: two network evaluations per model evaluation (the samplers' NFE counts model
evaluations).
"""
from __future__ import annotations

import math

from genjax.processes.views import Model, as_model

# Output kinds whose score (and velocity) is affine in the output, so that guidance in output
# space is guidance in score space.
AFFINE_OUTPUT_KINDS = ("score", "noise", "denoised", "velocity")
NETWORK_CALLS_PER_EVALUATION = 2


def check_guidance_weight(weight, field: str = "guidance") -> float:
    """The weight as a float; ValueError on one line unless it is a finite number >= 0."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{field}={weight!r} must be a finite number >= 0 (0: no guidance; w: (1 + w) cond - w uncond)")
    return float(weight)


def guided_model(model, weight: float) -> Model:
    """The model whose output for class c is (1 + w) y(x, t, c) - w y(x, t, None) (module
    docstring); `model` itself when w = 0. The guided model needs a condition."""
    weight = check_guidance_weight(weight)
    model = as_model(model)
    if weight == 0.0:
        return model
    if model.per_example_fn is not None:
        raise ValueError("guidance needs a class-conditional model (a batched network that takes condition=None as "
                         "the null label); a per-example function (x, t) -> y takes no condition")
    if model.output_kind not in AFFINE_OUTPUT_KINDS:
        raise ValueError(f"guidance combines outputs linearly, which is the score's combination only for outputs "
                         f"{AFFINE_OUTPUT_KINDS}; a {model.output_kind!r} output is not affine in the score")
    network = model.output_fn

    def output_fn(x, t, condition=None, *, dropout_key=None, train=False):
        if condition is None:
            raise ValueError("a guided model needs class labels (condition); the null label is its reference")
        conditional = network(x, t, condition, dropout_key=dropout_key, train=train)
        unconditional = network(x, t, None, dropout_key=dropout_key, train=train)
        return (1.0 + weight) * conditional - weight * unconditional

    return Model(output_fn, model.output_kind)
