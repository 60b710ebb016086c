"""Flow matching against exact mathematics.

With the independent coupling and a Gaussian source, the linear and the VP paths are
affine Gaussian kernels from the data, so for a Gaussian-mixture target the marginal
velocity v_t(x) = alpha' E[x_0 | x] + sigma' E[eps | x] is exact
(`gaussian_mixture.perturbed_velocity_fn`). Fed that field as a velocity model:
  * the probability-flow sampler recovers the mixture: component weights, means and
    variances within Z standard errors of the sample size (the two-sample noise floor);
  * the ODE log-density matches log p_0 to 0.01 nats/dim with the exact trace, and within
    Z standard errors with Hutchinson's estimator;
and the CFM objective is minimised by it: adding delta raises the expected loss by E|delta|^2.
A velocity model on a path with an OT coupling has no score: stochastic samplers refuse it.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.evaluate.reflow import straightness
from genjax.data.gaussian_mixture import make_gaussian_mixture, perturbed_log_prob_fn, perturbed_velocity_fn
from genjax.objectives.flow_matching import conditional_flow_matching_loss
from genjax.processes import views
from genjax.processes.flow_matching import FlowMatchingPath
from genjax.samplers import log_likelihood, sample_ddim, sample_probability_flow, sample_reverse_sde

Z = 4.5
WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
STDS = np.array([0.5, 0.8, 0.3])
MIXTURE = make_gaussian_mixture(WEIGHTS, MEANS, STDS)
PATHS = {"linear": FlowMatchingPath(path="linear"), "vp": FlowMatchingPath(path="vp")}
NUM_SAMPLES = 2000


def exact_model(process):
    return views.Model.from_per_example(perturbed_velocity_fn(MIXTURE, process), "velocity")


def recovery_failures(samples):
    """Every moment of the mixture the samples miss by more than Z standard errors."""
    x = np.asarray(samples, np.float64)
    if not np.all(np.isfinite(x)):
        return ["non-finite samples"]
    n = len(x)
    nearest = np.argmin(((x[:, None, :] - MEANS[None]) ** 2).sum(-1), axis=1)
    failures = []
    for k, (w, mu, s) in enumerate(zip(WEIGHTS, MEANS, STDS)):
        xk = x[nearest == k]
        nk = len(xk)
        if abs(nk / n - w) > Z * np.sqrt(w * (1 - w) / n):
            failures.append(f"weight {k}: {nk / n:.4f} vs {w}")
            continue
        if np.any(np.abs(xk.mean(0) - mu) > Z * s / np.sqrt(nk)):
            failures.append(f"mean {k}: {xk.mean(0)} vs {mu}")
        if np.any(np.abs(xk.var(0, ddof=1) - s**2) > Z * s**2 * np.sqrt(2.0 / nk)):
            failures.append(f"variance {k}: {xk.var(0, ddof=1)} vs {s**2}")
    return failures


@functools.partial(jax.jit, static_argnums=0)
def sample_with_exact_velocity(process, mixture, key):
    """The probability-flow sampler fed the exact velocity of `mixture` (an argument: one
    compiled sampler per path serves every mixture)."""
    model = views.Model.from_per_example(perturbed_velocity_fn(mixture, process), "velocity")
    return sample_probability_flow(process, model, key, NUM_SAMPLES, (2,))


@pytest.mark.parametrize("path", ["linear", pytest.param("vp", marks=pytest.mark.slow)])
def test_exact_velocity_recovers_mixture(path):
    result = sample_with_exact_velocity(PATHS[path], MIXTURE, jax.random.key(0))
    assert bool(jnp.all(result.successful))
    assert recovery_failures(result.samples) == []


def test_wrong_velocity_fails_recovery():
    """The check has power: the field of the mixture with reversed weights is caught."""
    wrong = make_gaussian_mixture(WEIGHTS[::-1], MEANS, STDS)
    result = sample_with_exact_velocity(PATHS["linear"], wrong, jax.random.key(0))
    assert recovery_failures(result.samples)


@pytest.mark.parametrize("path", ["linear", pytest.param("vp", marks=pytest.mark.slow)])
def test_exact_trace_log_density_matches_analytic(path):
    """log p_0 through the ODE from t = 0 (the data) to t = 1, where the path is exactly the
    prior N(0, I): no prior mismatch, so only solver error remains (< 0.01 nats/dim)."""
    process = PATHS[path]
    x = MIXTURE.sample(jax.random.key(1), 64)
    result = jax.jit(lambda x: log_likelihood(process, exact_model(process), x, rtol=1e-6, atol=1e-6))(x)
    truth = jax.vmap(perturbed_log_prob_fn(MIXTURE, process), in_axes=(0, None))(x, jnp.float32(0.0))
    assert np.max(np.abs(np.asarray(result.log_prob - truth))) / 2 < 0.01


def test_hutchinson_log_density_within_its_standard_error():
    process = PATHS["linear"]
    x = MIXTURE.sample(jax.random.key(2), 64)
    result = jax.jit(lambda x, key: log_likelihood(process, exact_model(process), x, key, divergence="hutchinson",
                                                   probe="rademacher", num_probes=4, rtol=1e-5, atol=1e-5))(
        x, jax.random.key(3))
    truth = jax.vmap(perturbed_log_prob_fn(MIXTURE, process), in_axes=(0, None))(x, jnp.float32(0.0))
    error = np.asarray(result.log_prob - truth, np.float64)
    standard_error = np.sqrt(np.sum(np.asarray(result.standard_error, np.float64) ** 2)) / len(error)
    assert abs(error.mean()) < Z * standard_error
    # and the estimator is not exact by accident: it has a spread
    assert standard_error > 1e-4


# --- the CFM objective --------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["linear", "vp"])
def test_cfm_is_minimised_by_the_marginal_velocity(path):
    """loss(v* + delta) - loss(v*) = E|delta|^2: the cross term 2 E[delta . (v* - u)] vanishes
    because v* = E[u | x_t]. The objective is evaluated on one batch with common random
    numbers; the Monte Carlo error of the cross term comes from the same draws per example."""
    process = FlowMatchingPath(path=path, sigma=0.1)
    exact = perturbed_velocity_fn(MIXTURE, process)

    def delta(x, t):
        return 0.2 * x + 0.3 * jnp.sin(x + 3.0 * t)

    num = 20_000
    x0 = MIXTURE.sample(jax.random.key(4), num)
    keys = jax.random.split(jax.random.key(5), num)

    @jax.jit
    def loss(scale):  # of the model v* + scale delta: one program for v* + delta and v*
        model = views.Model.from_per_example(lambda x, t: exact(x, t) + scale * delta(x, t), "velocity")
        return conditional_flow_matching_loss(model, process, x0, keys, reduce="sum")

    increase = float(loss(1.0)) - float(loss(0.0))

    def cross_and_delta(x, key):  # the objective's own draws for one example
        key_t, key_source, key_eps = jax.random.split(key, 3)
        t = process.sample_training_time(key_t)
        x_t, u = process.conditional_path(x, process.source_sample(key_source, x.shape), jax.random.normal(key_eps, x.shape), t)
        d = delta(x_t, t)
        return 2.0 * jnp.sum(d * (exact(x_t, t) - u)), jnp.sum(d**2)

    cross, delta_squared = (np.asarray(v, np.float64) for v in jax.jit(jax.vmap(cross_and_delta))(x0, keys))
    # The objective and the per-example terms describe the same draws ...
    np.testing.assert_allclose(increase, cross.mean() + delta_squared.mean(), rtol=1e-3, atol=1e-4)
    # ... and the cross term is zero within its Monte Carlo error.
    assert abs(increase - delta_squared.mean()) < Z * cross.std() / np.sqrt(num)
    assert delta_squared.mean() > 0.05


# --- capabilities -------------------------------------------------------------------------------
def test_velocity_without_score_is_refused_by_stochastic_samplers():
    process = FlowMatchingPath(coupling="exact_ot", t_max=0.99)
    model = views.Model.from_per_example(lambda x, t: x, "velocity")
    with pytest.raises(ValueError, match="no reverse-time SDE.*use probability_flow"):
        sample_reverse_sde(process, model, jax.random.key(0), 2, (2,), 10)
    with pytest.raises(views.NoScoreError, match="ddim needs a score"):
        sample_ddim(FlowMatchingPath(coupling="exact_ot", t_min_sample=1e-3), model, jax.random.key(0), 2, (2,), 10)
    with pytest.raises(views.NoScoreError, match="use model.output='velocity'"):
        views.velocity_fn(process, views.Model.from_per_example(lambda x, t: x, "noise"))
    with pytest.raises(ValueError, match="t_max = 1"):  # independent coupling, but alpha(1) = 0
        sample_reverse_sde(FlowMatchingPath(), model, jax.random.key(0), 2, (2,), 10)


@pytest.mark.slow
def test_independent_coupling_keeps_a_score_and_the_reverse_sde_below_t_one():
    """With t_max < 1 the linear path's exact velocity, read as a score, drives Euler-Maruyama
    to the mixture (the score of a velocity model: views.score_from_velocity)."""
    process = FlowMatchingPath(t_max=0.995, t_min_sample=1e-3)
    sample = jax.jit(lambda key: sample_reverse_sde(process, exact_model(process), key, NUM_SAMPLES, (2,), 500))
    result = sample(jax.random.key(6))
    assert recovery_failures(result.samples) == []


def test_options_are_checked():
    with pytest.raises(ValueError, match="coupling='ot' is not known"):
        FlowMatchingPath(coupling="ot")
    with pytest.raises(ValueError, match="sigma=0.0 must be > 0 for the schrodinger_bridge"):
        FlowMatchingPath(coupling="schrodinger_bridge")
    with pytest.raises(ValueError, match="sigma_min=0.1 is for path='linear'"):
        FlowMatchingPath(path="vp", sigma_min=0.1)


# --- a CNF fits the same interface ----------------------------------------------------------------
class _GaussianPriorOnly:
    """All a CNF needs to be: a time range, a prior and no score (no kernel, no SDE)."""

    t_max, t_min_sample = 1.0, 0.0
    has_score = has_reverse_sde = False

    def prior_sample(self, key, shape):
        return jax.random.normal(key, shape)

    def prior_log_prob(self, z):
        return -0.5 * jnp.sum(z**2) - 0.5 * z.size * jnp.log(2.0 * jnp.pi)

    def time_grid(self, num_steps):
        return jnp.linspace(self.t_max, self.t_min_sample, num_steps + 1, dtype=jnp.float32)


def test_a_cnf_velocity_fits_the_samplers_and_the_likelihood():
    """dx/dt = A x carries x(0) to x(1) = e^A x(0), so log p_0(x) = log N(e^A x) + tr(A)
    exactly; the same velocity model samples by the ODE and is refused by Euler-Maruyama."""
    process = _GaussianPriorOnly()
    matrix = jnp.array([[0.3, -0.5], [0.2, -0.4]])
    model = views.Model.from_per_example(lambda x, t: matrix @ x, "velocity")
    x = jax.random.normal(jax.random.key(7), (8, 2))
    result = log_likelihood(process, model, x, rtol=1e-6, atol=1e-6)
    pushed = x @ jax.scipy.linalg.expm(matrix).T
    truth = jax.vmap(process.prior_log_prob)(pushed) + jnp.trace(matrix)
    np.testing.assert_allclose(result.log_prob, truth, atol=1e-4)
    samples = sample_probability_flow(process, model, jax.random.key(8), 4, (2,), solver="tsit5").samples
    prior = jax.vmap(lambda k: process.prior_sample(jax.random.fold_in(k, 0), (2,)))(
        jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(8), jnp.arange(4, dtype=jnp.uint32)))
    np.testing.assert_allclose(samples, prior @ jax.scipy.linalg.expm(-matrix).T, atol=1e-4)
    with pytest.raises(ValueError, match="no reverse-time SDE"):
        sample_reverse_sde(process, model, jax.random.key(0), 2, (2,), 10)


# --- OT-CFM trajectories are straighter than I-CFM's (trains: slow) ----------------------------------
def model_straightness(process, model, key, num=512, steps=64):
    """Liu et al.'s straightness of the model's own ODE from num prior draws
    (genjax.evaluate.reflow.straightness)."""
    return straightness(views.velocity_fn(process, model), jax.random.normal(key, (num, 2)), steps)


def train_cfm(coupling, steps=600, batch=128, seed=0):
    import optax

    from genjax.data.toy import eight_gaussians
    from genjax.nets.mlp import TimeConditionedMLP

    process = FlowMatchingPath(coupling=coupling)
    network = TimeConditionedMLP(hidden_dim=64, num_layers=2)
    data = eight_gaussians(jax.random.key(seed), 1 << 14)
    params = network.init(jax.random.key(seed + 1), data[:1], jnp.zeros((1,)))
    optimizer = optax.adam(2e-3)

    def model_of(p):
        return views.Model(lambda x, t, condition=None, **_: network.apply(p, x, t, condition), "velocity")

    @jax.jit
    def update(p, state, step):
        key = jax.random.fold_in(jax.random.key(seed + 2), step)
        rows = jax.random.randint(jax.random.fold_in(key, 1), (batch,), 0, data.shape[0])
        keys = jax.random.split(key, batch)
        loss, grads = jax.value_and_grad(lambda q: conditional_flow_matching_loss(model_of(q), process, data[rows], keys))(p)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    state = optimizer.init(params)
    for step in range(steps):
        params, state, loss = update(params, state, step)
        if step % 10 == 0:
            loss.block_until_ready()
    return process, model_of(params)


@pytest.mark.slow
def test_ot_cfm_is_straighter_than_i_cfm():
    values = {c: model_straightness(*train_cfm(c), jax.random.key(9)) for c in ("independent", "exact_ot")}
    assert values["exact_ot"] < 0.5 * values["independent"], values
