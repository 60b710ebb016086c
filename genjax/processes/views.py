"""A trained model and the views samplers ask of it: score, denoised, velocity.

A `Model` is a BATCHED network function together with what its output means (its
`output_kind`):

    output_fn(x [B, *shape], t [B], condition=None, *, dropout_key=None, train=False) -> y [B, ...]

(condition: None or int32 [B] class labels; dropout only when train, from dropout_key). A
bare per-example function (x [*shape], t []) -> y (an analytic oracle) is accepted wherever
a model is taken and vmapped into that form (`as_model`, `Model.from_per_example`; it takes
no condition). A process (a probability path) and a model together give every view a
sampler, a likelihood or an objective needs; the conversions live here, once.
For a path whose kernel from the data is x_t = alpha(t) x_0 + sigma(t) eps (rates alpha',
sigma'), the views of p_t are

    score        s(x, t)   = grad_x log p_t(x)
    noise        eps(x, t) = E[eps | x_t = x] = -sigma(t) s(x, t)   (Ho et al. 2020; Song et al. 2021)
    denoised     D(x, t)   = E[x_0 | x_t = x] = (x + sigma^2 s) / alpha   (Tweedie; Karras et al. 2022)
    velocity     v(x, t)   = f(x, t) - g(t)^2 s(x, t) / 2          (probability flow; Song et al. 2021,
                           = alpha' D + sigma' eps                  eq. 13; `process.probability_flow_drift`)

(the second form of v holds for the drift f = (alpha'/alpha) x and g^2 = 2 sigma^2
d/dt log(sigma/alpha) of any affine Gaussian kernel; it stays finite where alpha = 0, as at
the prior end of a flow-matching path, and `velocity_from_denoised_and_noise` is its home).
The denoised view is in the units of the data; for a scaled process (Karras et al. 2022,
Table 1) with alpha = s(t), sigma = s(t) sigma_tilde(t), EDM's denoiser D(x_hat; sigma_tilde)
is this same D (`sigma_tilde_from_coefficients` gives sigma_tilde = sigma / alpha).

Output kinds (`OUTPUT_KINDS`; a new kind is one entry there; each formula is written per
example and vmapped over a batch):
  "score", "noise", "denoised": read as a score; the velocity is its probability flow.
  "velocity": the velocity itself (flow matching, CNFs); its score is 2 (f - v) / g^2 (the
      inverse of the probability flow).
  "poisson_field": PFGM's normalised (N+1)-vector field, read as the velocity E_x / E_z
      (`velocity_from_poisson_field`) and, through it, as a pseudo-score.
Scores exist only where the process says its velocity is the probability flow of a score
(`process.has_score`, True unless set: diffusion, PFGM++'s pseudo-score, flow matching with
the independent coupling; not a flow-matching path with an optimal-transport coupling, whose
p_t is not a Gaussian blur of the data, nor a CNF). On such a path only a velocity output is
meaningful, and every other kind is refused.

Who asks for what: the ODE samplers and the likelihood ask for `velocity_fn`; stochastic
samplers, DDIM, EDM's Heun sampler and denoising score matching ask for `score_fn`, which
refuses, with one line, a model that has no score. Every view comes in two forms with the
same keywords: batched (`batched_score_fn`, `batched_velocity_fn`: one network call for the
batch; the objectives) and per example (`score_fn`, `velocity_fn`: (x [*shape], t [],
condition=None [] , ...) -> [*shape], the network called on a batch of one; the samplers and
the adaptive solvers vmap it, so step control stays per example).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

PerExampleFn = Callable[..., jax.Array]
# A per-example score model (x [*shape], t []) -> grad_x log p_t(x) [*shape]: what samplers,
# likelihoods and the stochastic-calculus studies take in place of a network.
ScoreFn = PerExampleFn
# The network contract: (x [B, *shape], t [B], condition=None, *, dropout_key=None, train=False)
# -> y [B, ...] (module docstring).
BatchedFn = Callable[..., jax.Array]


# --- the formulas (one copy each) ------------------------------------------------------------
def score_from_noise(noise: jax.Array, sigma: jax.Array) -> jax.Array:
    return -noise / sigma


def noise_from_score(score: jax.Array, sigma: jax.Array) -> jax.Array:
    return -sigma * score


def denoised_from_score(x: jax.Array, score: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    return (x + sigma**2 * score) / alpha


def score_from_denoised(x: jax.Array, denoised: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    return (alpha * denoised - x) / sigma**2


def sigma_tilde_from_coefficients(alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """The EDM noise level sigma_tilde = sigma / alpha of x_hat = x / alpha (Karras et al. 2022)."""
    return sigma / alpha


def velocity_from_score(process, x: jax.Array, t: jax.Array, score: jax.Array) -> jax.Array:
    """Probability-flow velocity v = f(x, t) - g(t)^2 score / 2 (Song et al. 2021, eq. 13):
    the process's `probability_flow_drift`, which a path without an SDE can define directly."""
    return process.probability_flow_drift(x, t, score)


def score_from_velocity(process, x: jax.Array, t: jax.Array, velocity: jax.Array) -> jax.Array:
    """Inverse of `velocity_from_score`: score = 2 (f(x, t) - v) / g(t)^2 (needs g(t) > 0)."""
    return 2.0 * (process.drift(x, t) - velocity) / process.diffusion(t) ** 2


def velocity_from_denoised_and_noise(denoised: jax.Array, noise: jax.Array, alpha_rate: jax.Array,
                                     sigma_rate: jax.Array) -> jax.Array:
    """v = alpha'(t) E[x_0 | x] + sigma'(t) E[eps | x], the marginal velocity of the kernel
    x_t = alpha x_0 + sigma eps (the conditional velocity alpha' x_0 + sigma' eps averaged
    over the posterior; Lipman et al. 2023, eq. 8). Finite where alpha = 0."""
    return alpha_rate * denoised + sigma_rate * noise


# --- what a network's output means ----------------------------------------------------------
class NoScoreError(ValueError):
    """The model has no score view (a velocity on a path that is not a score's probability flow)."""


def velocity_from_poisson_field(process, x: jax.Array, t: jax.Array, field: jax.Array) -> jax.Array:
    """PFGM's (Xu et al. 2022) normalised field (x, z) -> [N + 1] at z = t read as the velocity
    dx/dz = E_x / E_z (`process.velocity_from_normalised_field`, genjax/processes/pfgm.py). As a
    score (`score_from_velocity`; PFGM's f = 0, g^2 = 2 z) it is s = -(E_x / E_z) / z =
    (E[y | x, z] - x) / z^2, a pseudo-score as PFGM++'s."""
    if field.shape != (x.size + 1,):
        raise ValueError(
            f"a Poisson-field model must output x.size + 1 = {x.size + 1} numbers per example, got shape "
            f"{field.shape}; set the network's output_dim to {x.size + 1}"
        )
    return process.velocity_from_normalised_field(field, t).reshape(x.shape)


@dataclasses.dataclass(frozen=True)
class OutputKind:
    """How to read an output y at (x, t) of `process`. Every kind has a score only on a path
    whose velocity is the probability flow of a score (`process.has_score`).

    Attributes:
      to_score: (process, x, t, y) -> score.
      to_velocity: (process, x, t, y) -> velocity, or None: the probability flow of the score.
    """

    to_score: Callable
    to_velocity: Callable | None = None


def _coefficients(process, t):
    return process.marginal_coefficients(t)


OUTPUT_KINDS: Mapping[str, OutputKind] = {
    "score": OutputKind(to_score=lambda process, x, t, y: y),
    "noise": OutputKind(to_score=lambda process, x, t, y: score_from_noise(y, _coefficients(process, t)[1])),
    "denoised": OutputKind(to_score=lambda process, x, t, y: score_from_denoised(x, y, *_coefficients(process, t))),
    "velocity": OutputKind(
        to_score=lambda process, x, t, y: score_from_velocity(process, x, t, y),
        to_velocity=lambda process, x, t, y: y,
    ),
    "poisson_field": OutputKind(
        to_score=lambda process, x, t, y: score_from_velocity(process, x, t, velocity_from_poisson_field(process, x, t, y)),
        to_velocity=lambda process, x, t, y: velocity_from_poisson_field(process, x, t, y),
    ),
}


@dataclasses.dataclass(frozen=True)
class Model:
    """A batched network function (the contract of the module docstring) and what its
    output is (a key of `OUTPUT_KINDS`). Static under `jax.jit` (close over it, as over a
    process). `per_example_fn` is set by `from_per_example` only: the oracle itself, which
    the per-example views call directly."""

    output_fn: BatchedFn
    output_kind: str = "score"
    per_example_fn: PerExampleFn | None = None
    # output_fn also takes t of shape [1], one time for the whole batch, and then computes
    # what depends on t alone once (`shared_time_velocity_fn`); the same numbers as t [B].
    shared_noise_level: bool = False

    def __post_init__(self):
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"unknown model output {self.output_kind!r}; choose one of {tuple(OUTPUT_KINDS)}")

    @classmethod
    def from_per_example(cls, fn: PerExampleFn, output_kind: str = "score") -> "Model":
        """The model of a per-example function (x [*shape], t []) -> y, vmapped over a batch;
        it takes no condition and no dropout."""

        def batched(x, t, condition=None, *, dropout_key=None, train=False):
            del dropout_key, train
            _refuse_condition(condition)
            return jax.vmap(fn)(x, t)

        return cls(batched, output_kind, per_example_fn=fn)

    @property
    def kind(self) -> OutputKind:
        return OUTPUT_KINDS[self.output_kind]


def _refuse_condition(condition) -> None:
    if condition is not None:
        raise ValueError("a per-example function (x, t) -> y takes no condition; pass condition=None, or a "
                         "views.Model around a network built with num_classes > 0")


def as_model(model) -> Model:
    """`model` itself if it is a `Model`; a bare per-example function is a score model."""
    return model if isinstance(model, Model) else Model.from_per_example(model, "score")


def has_score(process, model) -> bool:
    """Whether `model` on `process` has a score view (and hence a denoised one): only where
    the path's velocity is the probability flow of a score (`process.has_score`, default True)."""
    del model  # every output kind converts to a score on such a path, and none on another
    return bool(getattr(process, "has_score", True))


def require_score(process, model, user: str) -> None:
    """NoScoreError, on one line naming `user`, unless the model has a score view."""
    if has_score(process, model):
        return
    model = as_model(model)
    if model.kind.to_velocity is None:
        raise NoScoreError(
            f"a {model.output_kind!r} output is read through a score, and {_describe(process)} has none "
            "(its velocity is not the probability flow of a score); use model.output='velocity'"
        )
    raise NoScoreError(
        f"{user} needs a score, and a {model.output_kind!r} model of {_describe(process)} has none "
        "(its velocity is not the probability flow of a score); use probability_flow, or the "
        "likelihood, which need only the velocity"
    )


def _describe(process) -> str:
    describe = getattr(process, "describe", None)
    return describe() if callable(describe) else type(process).__name__


# --- the views --------------------------------------------------------------------------------
def _converter(process, model: Model, view: str):
    """The per-example conversion (x, t, y) -> view of an output y of `model`, or None
    where the view is the output itself."""
    kind = model.kind
    if view == "velocity" and kind.to_velocity is not None:
        return lambda x, t, y: kind.to_velocity(process, x, t, y)
    require_score(process, model, "this sampler or objective")
    if view == "score":
        return None if model.output_kind == "score" else (lambda x, t, y: kind.to_score(process, x, t, y))
    return lambda x, t, y: velocity_from_score(process, x, t, kind.to_score(process, x, t, y))


def _batched_view(process, model, view: str) -> BatchedFn:
    model = as_model(model)
    convert = _converter(process, model, view)
    if convert is None:
        return model.output_fn

    def batched(x, t, condition=None, *, dropout_key=None, train=False):
        y = model.output_fn(x, t, condition, dropout_key=dropout_key, train=train)
        return jax.vmap(convert)(x, t, y)

    return batched


def _per_example_view(process, model, view: str) -> PerExampleFn:
    model = as_model(model)
    convert = _converter(process, model, view)
    if model.per_example_fn is not None:
        fn = model.per_example_fn

        def output(x, t, condition, dropout_key, train):
            _refuse_condition(condition)
            return fn(x, t)
    else:
        def output(x, t, condition, dropout_key, train):
            condition = None if condition is None else jnp.asarray(condition)[None]
            return model.output_fn(x[None], jnp.asarray(t)[None], condition, dropout_key=dropout_key, train=train)[0]

    def per_example(x, t, condition=None, *, dropout_key=None, train=False):
        y = output(x, t, condition, dropout_key, train)
        return y if convert is None else convert(x, t, y)

    return per_example


def score_fn(process, model) -> PerExampleFn:
    """The per-example score (x, t, condition=None, *, dropout_key=None, train=False) ->
    grad_x log p_t(x) of `model` (NoScoreError if it has none)."""
    return _per_example_view(process, model, "score")


def velocity_fn(process, model) -> PerExampleFn:
    """The per-example ODE velocity (x, t, condition=None, ...) -> v: the output itself for a
    velocity model, the probability flow of the score for every other kind."""
    return _per_example_view(process, model, "velocity")


def batched_score_fn(process, model) -> BatchedFn:
    """`score_fn` on a batch: (x [B, *shape], t [B], condition=None, *, dropout_key=None,
    train=False) -> [B, *shape], one network call."""
    return _batched_view(process, model, "score")


def batched_velocity_fn(process, model) -> BatchedFn:
    """`velocity_fn` on a batch (one network call)."""
    return _batched_view(process, model, "velocity")


def shared_time_velocity_fn(process, model) -> Callable:
    """`batched_velocity_fn` at one time t [] for the whole batch: (x [B, *shape], t [],
    condition=None) -> [B, *shape]. A model with `shared_noise_level` gets t as [1] and the
    conversion takes t unbatched, so the time-only work (the network's time branch, the
    kernel's coefficients) runs once per call instead of B times; others get t [B]. Same
    numbers either way, to float rounding."""
    model = as_model(model)
    if not model.shared_noise_level:
        batched = batched_velocity_fn(process, model)
        return lambda x, t, condition=None: batched(x, jnp.full(x.shape[:1], t, x.dtype), condition)
    convert = _converter(process, model, "velocity")

    def velocity(x, t, condition=None):
        t = jnp.asarray(t, x.dtype)
        y = model.output_fn(x, t[None], condition)
        return y if convert is None else jax.vmap(convert, in_axes=(0, None, 0))(x, t, y)

    return velocity


def coefficient_rates(process, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(alpha, sigma, alpha', sigma') of the kernel at t (rates by forward-mode AD)."""
    t = jnp.asarray(t, jnp.result_type(float))
    (alpha, sigma), (alpha_rate, sigma_rate) = jax.jvp(process.marginal_coefficients, (t,), (jnp.ones_like(t),))
    return alpha, sigma, alpha_rate, sigma_rate


# --- kept for callers that hold an output function and its kind -----------------------------
def score_fn_from_output(process, output_fn: PerExampleFn, output_kind: str) -> PerExampleFn:
    """The score of a per-example output (x, t) -> y of the given kind."""
    return score_fn(process, Model.from_per_example(output_fn, output_kind))
