"""PFGM (Xu et al. 2022) against the exact field of a weighted point set.

The training perturbation's law (KS tests with computed p-values), the batch-field target
converging to the exact normalised field as the batch grows, the samplers and the likelihood
fed the exact normalised field through the `poisson_field` output kind (mode shares within
binomial error; log p_{z_min} to 0.01 nats/dim), and the objective preferring the exact field.
Each check is also run on a wrong field or law and must fail there.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from genjax.data import point_set_oracle as oracle
from genjax.objectives.poisson_field import batch_field, poisson_field_loss
from genjax.processes.pfgm import PFGMProcess
from genjax.processes.pfgmpp import PFGMPPProcess
from genjax.processes.views import Model
from genjax.samplers import log_likelihood, sample_edm_heun, sample_probability_flow

POINTS = oracle.make_point_set([[-1.0, -0.5], [1.0, -0.5], [0.0, 1.0]], [0.5, 0.3, 0.2])
WRONG_POINTS = oracle.make_point_set(POINTS.points, POINTS.weights * jnp.array([1.1, 1.0, 1.0]))
P_MIN = 1e-3  # a check passes when its p-value exceeds this
SLOW = pytest.mark.slow


def coulomb_field(points, x, z):
    """E(x, z) = sum_k w_k (x - y_k, z) / (|x - y_k|^2 + z^2)^((N+1)/2), written out."""
    diff = x - points.points
    power = (jnp.sum(diff**2, axis=1) + z**2) ** (-0.5 * (diff.shape[1] + 1))
    return jnp.concatenate([jnp.sum((points.weights * power)[:, None] * diff, axis=0),
                            jnp.sum(points.weights * power * z)[None]])


def exact_field(points, process, x, z):
    """G = (E[y | x, z] - x, -z) of the point set under the D = 1 kernel."""
    return jnp.concatenate([points.denoised(process, x, z) - x, -jnp.reshape(z, (1,))])


def exact_field_model(points, process):
    """The exact normalised field T = sqrt(N) G / (|G| + gamma), read as a model."""
    return Model.from_per_example(lambda x, z: process.normalised_field(exact_field(points, process, x, z)),
                                  "poisson_field")


# --- the process ----------------------------------------------------------------------------
def test_prior_and_kernel_are_pfgmpp_with_one_extra_dimension():
    pfgm = PFGMProcess(z_min=0.01, z_max=30.0)
    reference = PFGMPPProcess(augment_dim=1.0, sigma_min=0.01, sigma_max=30.0)
    z = jnp.array([[3.0, -40.0], [0.1, 0.2], [300.0, 1.0]])
    np.testing.assert_allclose(jax.vmap(pfgm.prior_log_prob)(z), jax.vmap(reference.prior_log_prob)(z), rtol=1e-6)
    assert (pfgm.t_max, pfgm.t_min_sample) == (30.0, pytest.approx(0.01))


def test_prior_draws_are_the_kernels_with_the_norm_clipped_where_training_ends():
    """Below the bound a draw is PFGM++'s (D = 1) draw itself; above it, that draw scaled back to
    the bound. The default bound is the covered radius sqrt(N + 1) sigma (1 + tau)^M (94.2 for
    the paper's M = 291 in 2-D, where 39 % of the Cauchy prior at z_max = 40 lies beyond)."""
    pfgm = PFGMProcess(z_max=40.0)
    reference = PFGMPPProcess(augment_dim=1.0, sigma_min=1e-3, sigma_max=40.0)
    bound = math.sqrt(3) * 0.01 * 1.03**291
    assert pfgm.prior_norm_bound(2) == pytest.approx(bound, rel=1e-6)
    keys = jax.random.split(jax.random.key(0), 20_000)
    draws, kernel = (np.asarray(v, np.float64) for v in jax.jit(lambda k: (
        jax.vmap(lambda key: pfgm.prior_sample(key, (2,)))(k), jax.vmap(lambda key: reference.prior_sample(key, (2,)))(k)))(keys))
    norm = np.linalg.norm(kernel, axis=1)
    inside = norm < bound
    np.testing.assert_allclose(draws[inside], kernel[inside], rtol=1e-6)
    np.testing.assert_allclose(draws[~inside], kernel[~inside] * (bound / norm[~inside])[:, None], rtol=1e-5)
    assert abs(np.mean(~inside) - 40.0 / math.hypot(bound, 40.0)) < 0.015
    assert PFGMProcess(upper_norm=50.0).prior_norm_bound(2) == 50.0


def test_a_prior_bound_beyond_the_training_perturbation_is_refused():
    """The paper's M = 291 covers radii up to 94.2 in 2-D: a bound of 100 is refused, 94 is not."""
    with pytest.raises(ValueError, match="upper_norm=100.0 exceeds the radius .* covers .* raise max_exponent"):
        process = PFGMProcess(upper_norm=100.0)
        jax.eval_shape(lambda key: process.prior_sample(key, (2,)), jax.random.key(0))
    assert PFGMProcess(upper_norm=94.0).prior_norm_bound(2) == 94.0
    assert PFGMProcess(upper_norm=1000.0, max_exponent=380.0).prior_norm_bound(2) == 1000.0


def test_time_grid_is_uniform_in_log_z():
    grid = np.asarray(PFGMProcess(z_min=1e-3, z_max=40.0).time_grid(8), np.float64)
    assert grid[0] == pytest.approx(40.0) and grid[-1] == pytest.approx(1e-3)
    np.testing.assert_allclose(np.diff(np.log(grid)), np.log(1e-3 / 40.0) / 8, rtol=1e-5)


@pytest.mark.parametrize("field, value", [("z_min", 0.0), ("z_max", 1e-4), ("tau", -0.1), ("gamma", -1.0),
                                          ("perturb_std", 0.0)])
def test_out_of_range_parameters_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        PFGMProcess(**{field: value})


@functools.partial(jax.jit, static_argnums=0)
def exact_normalised_field(process, x, z):
    """(T, the exact velocity (x - E[y | x, z]) / z, the direction of -E (Coulomb), of G) at (x, z)."""
    field = exact_field(POINTS, process, x, z)
    coulomb = coulomb_field(POINTS, x, z)
    expected = (x - POINTS.denoised(process, x, z)) / z
    return (process.normalised_field(field), expected, -coulomb / jnp.linalg.norm(coulomb),
            field / jnp.linalg.norm(field))


@functools.partial(jax.jit, static_argnums=0)
def velocity_readings(process, normalised, z):
    """The three readings of a normalised field: (ratio, inversion, blend)."""
    return (process.velocity_by_ratio(normalised), process.velocity_by_inversion(normalised, z),
            process.velocity_from_normalised_field(normalised, z))


def test_every_reading_of_the_exact_normalised_field_is_the_pfgmpp_velocity():
    """The ratio T_x / T_z, the inversion of T_x alone and their blend all give
    dx/dz = (x - E[y | x, z]) / z, and the Coulomb field has the direction of -G."""
    process = PFGMProcess()
    for x, z in [([0.3, 0.2], 0.01), ([5.0, 3.0], 2.0), ([100.0, -30.0], 40.0), ([-0.99, -0.5], 1e-3)]:
        x, z = jnp.asarray(x, jnp.float32), jnp.float32(z)
        normalised, expected, coulomb_direction, field_direction = jax.device_get(exact_normalised_field(process, x, z))
        np.testing.assert_allclose(coulomb_direction, field_direction, atol=1e-5)
        scale = 1e-4 * float(np.max(np.abs(expected)))
        for velocity in velocity_readings(process, normalised, z):
            np.testing.assert_allclose(velocity, expected, rtol=1e-4, atol=scale)


def test_blend_leans_on_the_inversion_where_the_z_component_is_wrong():
    """Near the data at small z a model's error of 1e-3 in T_z (comparable to T_z itself)
    moves the ratio's velocity by a large factor, the blend's by little."""
    process = PFGMProcess()
    z = jnp.float32(0.005)
    normalised, expected, _, _ = jax.device_get(exact_normalised_field(process, jnp.array([-0.9, -0.45]), z))
    wrong = normalised.copy()
    wrong[-1] += 1e-3
    ratio, _, blend = velocity_readings(process, wrong, z)
    error = lambda v: float(np.linalg.norm(v - expected) / np.linalg.norm(expected))
    assert error(ratio) > 0.5
    assert error(blend) < 0.05


def test_reading_is_continuous_where_a_learned_z_component_crosses_zero():
    """Far out near the plane the exact T_z is small (here -0.017), and a model's error can give
    it either sign. T_x / T_z would then jump from one sign to the other; the blend with the
    ratio read as -T_x / |T_z| changes by little and keeps pointing away from the data."""
    process = PFGMProcess(z_exp=40.0)
    z = jnp.float32(6.0)
    normalised, expected, _, _ = jax.device_get(exact_normalised_field(process, jnp.array([600.0, -650.0]), z))
    below, above, exact = (velocity_readings(process, field, z)[2]
                           for field in (np.append(normalised[:-1], -1e-6), np.append(normalised[:-1], 1e-6), normalised))
    np.testing.assert_allclose(below, above, rtol=1e-3)
    assert float(np.dot(above, expected)) > 0
    np.testing.assert_allclose(exact, expected, rtol=1e-3)


# --- 1. the training perturbation -----------------------------------------------------------------
@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _perturbation_draws(process, num, dim):
    keys = jax.random.split(jax.random.key(1), num)
    return jax.vmap(lambda k: process.training_perturbation(k, jnp.zeros((dim,))))(keys)


def perturbation_draws(process, num=20_000, dim=2):
    x, z = _perturbation_draws(process, num, dim)
    return np.asarray(x, np.float64), np.asarray(z, np.float64)


def radius_cdf(process, dim=2):
    """CDF of R = |(x - y, z)| = (1 + tau)^m |eps|, m ~ U[0, M], |eps| / sigma ~ chi_(N+1):
    in s = log R it is the chi CDF at log scale averaged over a uniform shift of width
    M log(1 + tau); tabulated and interpolated."""
    width = process.max_exponent * math.log1p(process.tau)
    s = np.linspace(math.log(process.perturb_std) - 8, math.log(process.perturb_std) + width + 4, 6_001)
    u = np.linspace(0.0, width, 801)
    chi = scipy.stats.chi(dim + 1)
    values = np.trapezoid(chi.cdf(np.exp(s[:, None] - u[None, :]) / process.perturb_std), u, axis=1) / width
    return lambda r: np.interp(np.log(r), s, values)


def test_training_perturbation_has_the_papers_radial_law_and_hemisphere_direction():
    process = PFGMProcess()
    x, z = perturbation_draws(process)
    radius = np.sqrt(np.sum(x**2, axis=1) + z**2)
    assert np.all(z > 0)
    assert scipy.stats.kstest(radius, radius_cdf(process)).pvalue > P_MIN
    # In R^3 the height of a uniform direction on the upper hemisphere is U(0, 1) (Archimedes).
    assert scipy.stats.kstest(z / radius, "uniform").pvalue > P_MIN


def test_radial_check_rejects_a_wrong_growth_factor():
    x, z = perturbation_draws(PFGMProcess(tau=0.03))
    radius = np.sqrt(np.sum(x**2, axis=1) + z**2)
    assert scipy.stats.kstest(radius, radius_cdf(PFGMProcess(tau=0.032))).pvalue < 1e-6


# --- 2. the batch-field target converges to the exact normalised field --------------------------------
QUERIES = [([0.3, 0.2], 0.5), ([2.0, 1.5], 1.0), ([-0.5, 0.4], 0.2), ([6.0, -3.0], 5.0)]


def target_errors(batch, repeats=64, charges_from=POINTS):
    """RMS over repeats and queries of |T_batch - T_exact| at the QUERIES."""
    return float(_target_errors(PFGMProcess(), charges_from, batch, repeats))


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _target_errors(process, charges_from, batch, repeats):
    x = jnp.asarray([q[0] for q in QUERIES])
    z = jnp.asarray([q[1] for q in QUERIES])
    exact = jax.vmap(lambda xi, zi: process.normalised_field(exact_field(POINTS, process, xi, zi)))(x, z)

    @jax.vmap
    def error(key):
        charges = charges_from.sample(key, batch)
        return jnp.sum((process.normalised_field(batch_field(x, z, charges)) - exact) ** 2)

    return jnp.sqrt(jnp.mean(error(jax.random.split(jax.random.key(2), repeats))))


def test_batch_field_target_converges_to_the_exact_field():
    """The batch estimate's error falls as 1 / sqrt(B) (x4 for 16x the charges) to zero."""
    errors = [target_errors(b) for b in (64, 1024, 16_384)]
    assert 3.0 < errors[0] / errors[1] < 5.3 and 3.0 < errors[1] / errors[2] < 5.3, errors
    assert errors[2] < 0.01, errors


def test_target_check_rejects_charges_of_the_wrong_weights():
    errors = [target_errors(b, charges_from=WRONG_POINTS) for b in (1024, 16_384)]
    assert errors[1] > 0.01 and errors[0] / errors[1] < 3.0, errors


# --- 3. samplers fed the exact normalised field recover the weights ------------------------------------
def share_test(shares, weights, num):
    """(chi-square p-value of the observed shares against the weights, max |error| / SE)."""
    counts = np.round(np.asarray(shares) * num)
    p_value = scipy.stats.chisquare(counts, np.asarray(weights) * num).pvalue
    se = np.sqrt(np.asarray(weights) * (1 - np.asarray(weights)) / num)
    return p_value, float(np.max(np.abs(np.asarray(shares) - np.asarray(weights)) / se))


def draw_shares(field_points, sampler, num, **options):
    process = PFGMProcess(z_max=40.0, max_exponent=450.0)  # configs/pfgm.py's: 0.4 % of prior draws clipped
    shares, successful = _draw_shares(process, field_points, sampler, num, tuple(sorted(options.items())))
    assert bool(successful)
    return np.asarray(shares)


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _draw_shares(process, field_points, sampler, num, options):
    """One compiled sampler per (sampler, num, options), the field's point set an argument."""
    result = sampler(process, exact_field_model(field_points, process), jax.random.key(3), num, (2,), **dict(options))
    return oracle.nearest_point_shares(POINTS, result.samples), jnp.all(result.successful)


@pytest.mark.parametrize(
    "sampler, options, num",
    [pytest.param(sample_probability_flow, {"rtol": 1e-4, "atol": 1e-4}, 4_000, marks=SLOW),
     pytest.param(sample_probability_flow, {"solver": "heun", "num_steps": 64}, 20_000, marks=SLOW),
     (sample_edm_heun, {"num_steps": 32}, 20_000)],
    ids=["probability_flow", "heun_log_z_grid", "edm_heun"],
)
def test_samplers_with_the_exact_normalised_field_recover_the_weights(sampler, options, num):
    shares = draw_shares(POINTS, sampler, num, **options)
    p_value, worst = share_test(shares, POINTS.weights, num)
    assert p_value > P_MIN and worst < 4.0, (shares, p_value, worst)


def test_share_check_rejects_a_misweighted_field():
    shares = draw_shares(WRONG_POINTS, sample_edm_heun, 20_000, num_steps=32)
    assert share_test(shares, POINTS.weights, 20_000)[0] < P_MIN, shares


# --- 4. likelihood --------------------------------------------------------------------------
def likelihood_gap(field_points):
    """max over points of |ODE log p_{z_min} - exact| / N, with the exact log p at z_max."""
    return float(_likelihood_gap(PFGMProcess(z_min=0.05, z_max=20.0), field_points))


@functools.partial(jax.jit, static_argnums=0)
def _likelihood_gap(process, field_points):
    z_min, z_max = jnp.float32(process.t_min_sample), jnp.float32(process.t_max)
    key_y, key_n = jax.random.split(jax.random.key(5))
    y = POINTS.sample(key_y, 16)
    x = y + process.z_min * jax.vmap(lambda k: process.perturbation_noise(k, (2,)))(jax.random.split(key_n, 16))
    exact = jax.vmap(lambda xi: POINTS.log_prob(process, xi, z_min))(x)
    result = log_likelihood(process, exact_field_model(field_points, process), x, divergence="exact", rtol=1e-6,
                            atol=1e-6, terminal_log_prob=lambda v: POINTS.log_prob(process, v, z_max))
    return jnp.max(jnp.abs(result.log_prob - exact)) / 2


def test_ode_likelihood_with_the_exact_field_matches_the_exact_density():
    assert likelihood_gap(POINTS) < 0.01


@SLOW
def test_likelihood_check_rejects_a_misweighted_field():
    assert likelihood_gap(WRONG_POINTS) > 0.01


# --- 5. the objective ---------------------------------------------------------------------------
def objective_value(field_points, batch=4096, num_perturbed=512):
    process = PFGMProcess(max_exponent=150.0)  # z up to about 1: where the points' fields differ
    return float(_objective_value(process, field_points, batch, num_perturbed))


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _objective_value(process, field_points, batch, num_perturbed):
    key_data, key_loss = jax.random.split(jax.random.key(6))
    x0 = POINTS.sample(key_data, batch)
    keys = jax.random.split(key_loss, batch)
    return poisson_field_loss(exact_field_model(field_points, process), process, x0, keys,
                              num_perturbed=num_perturbed)


def test_objective_prefers_the_exact_field_to_a_misweighted_one():
    """With 4096 charges the exact field is within the target's noise (a loss near 3e-7 here);
    10 % more weight on one point costs five times that."""
    exact, wrong = objective_value(POINTS), objective_value(WRONG_POINTS)
    assert exact < 5e-7 and wrong > 3 * exact, (exact, wrong)


def test_objective_refuses_a_model_without_the_extra_component():
    x0, keys = POINTS.points[jnp.array([0, 1, 2, 0, 1, 2, 0, 1])], jax.random.split(jax.random.key(1), 8)
    with pytest.raises(ValueError, match="output_dim=3"):  # raised while tracing: nothing compiles
        process = PFGMProcess()
        jax.eval_shape(lambda x, k: poisson_field_loss(lambda x, z: x, process, x, k), x0, keys)
    with pytest.raises(ValueError, match="process.name='pfgm'"):
        poisson_field_loss(lambda x, z: x, PFGMPPProcess(), x0, keys)


# --- the config -------------------------------------------------------------------------------
def test_config_builds_and_the_network_outputs_the_extra_component():
    from configs import pfgm
    from genjax.experiment import build_experiment
    from genjax.factory import ConfigError

    experiment = build_experiment(pfgm.get_config())
    assert isinstance(experiment.process, PFGMProcess)
    # The prior's clip lies inside the radius the training perturbation covers (1.0e4).
    assert experiment.process.prior_norm_bound(2) == 1500.0 < experiment.process.covered_radius(2)
    params = experiment.init_state().params
    x = jnp.ones((2,))
    assert experiment.network.apply(params, x[None], jnp.ones((1,))).shape == (1, 3)
    assert experiment.score_fn(params)(x, jnp.float32(1.0)).shape == (2,)
    config = pfgm.get_config()
    config.process.kwargs.tau = -1.0
    with pytest.raises(ConfigError, match="tau"):
        build_experiment(config)
    config = pfgm.get_config()
    config.model.kwargs.output_dim = 0
    with pytest.raises(ConfigError, match="output_dim"):
        build_experiment(config)
