"""Item 8: Anderson's reverse-time SDE with the exact score recovers p_0 from p_T; without the score
it does not. The score may also come from the Fokker-Planck solver."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.data.gaussian_mixture import make_gaussian_mixture, perturbed_score_fn
from genjax.processes import VPSDE
from genjax.stochastic import fokker_planck, models, sde_solvers, statistics, time_reversal
from genjax.stochastic.fokker_planck import Grid

PROCESS = VPSDE(t_max=2.0, beta_min=2.0, beta_max=2.0)  # dX = -X dt + sqrt(2) dW
MIXTURE = make_gaussian_mixture([0.3, 0.7], [[-2.0], [1.5]], [0.4, 0.6])
NUM_SAMPLES = 4000


def reverse_samples(score, start, num_steps=100, key=80):
    drift, diffusion = time_reversal.reverse_time_sde(PROCESS, score)
    run = jax.jit(lambda k, x: sde_solvers.simulate_paths(k, drift, diffusion, x, (0.0, PROCESS.t_max), num_steps, "shark"))
    return run(jax.random.key(key), start)[:, -1, 0]


def prior_samples():
    alpha, sigma = PROCESS.marginal_coefficients(PROCESS.t_max)
    return jax.jit(lambda k: MIXTURE.perturbed(alpha, sigma).sample(k, NUM_SAMPLES))(jax.random.key(81))


def test_reverse_sde_with_exact_score_recovers_p0_and_without_does_not():
    start = prior_samples()
    cdf = lambda x: time_reversal.gaussian_mixture_cdf(MIXTURE, x)
    critical = statistics.kolmogorov_smirnov_critical_value(NUM_SAMPLES, 0.99)
    with_score = reverse_samples(perturbed_score_fn(MIXTURE, PROCESS), start)
    without_score = reverse_samples(time_reversal.zero_score, start)
    assert float(statistics.kolmogorov_smirnov_statistic(with_score, cdf)) <= critical
    assert float(statistics.kolmogorov_smirnov_statistic(without_score, cdf)) > 10 * critical


def test_reverse_drift_is_anderson_formula():
    score = perturbed_score_fn(MIXTURE, PROCESS)
    drift, diffusion = time_reversal.reverse_time_sde(PROCESS, score)
    y, s = jnp.array([0.7]), 0.5
    t = PROCESS.t_max - s
    expected = -PROCESS.drift(y, t) + PROCESS.diffusion(t) ** 2 * score(y, t)
    np.testing.assert_allclose(drift(s, y), expected, rtol=1e-6)
    np.testing.assert_allclose(diffusion(s, y), PROCESS.diffusion(t) * jnp.ones(1), rtol=1e-6)


def test_grid_score_from_fokker_planck_matches_exact_mixture_score():
    grid = Grid((-7.0,), (7.0,), (400,))
    p0 = fokker_planck.discretize_density(lambda x: jnp.exp(jax.vmap(MIXTURE.log_prob)(x.reshape(-1, 1))).reshape(x.shape[:-1]), grid)
    times = PROCESS.t_max * jnp.linspace(0.0, 1.0, 41) ** 2
    drift = lambda t, x: PROCESS.drift(x, t)
    densities = jax.jit(lambda p: fokker_planck.solve_fokker_planck(p, drift, (1.0,), grid, times))(p0)
    grid_score = time_reversal.grid_score(densities, times, grid)
    exact = perturbed_score_fn(MIXTURE, PROCESS)
    x = jnp.linspace(-3.0, 3.0, 13)[:, None]
    for t in (0.1, 0.5, 1.5):
        approx = jax.vmap(lambda xi: grid_score(xi, t))(x)
        truth = jax.vmap(lambda xi: exact(xi, t))(x)
        assert float(jnp.max(jnp.abs(approx - truth))) < 0.05 * float(jnp.max(jnp.abs(truth))), t


@pytest.mark.slow
def test_reverse_sde_with_fokker_planck_score_recovers_double_well_law():
    well = models.DoubleWell(depth=0.5, sigma=0.8)
    grid = Grid((-6.0,), (6.0,), (400,))
    p0 = fokker_planck.discretize_density(well.unnormalised_stationary_density, grid)
    times = PROCESS.t_max * jnp.linspace(0.0, 1.0, 101) ** 2
    drift = lambda t, x: PROCESS.drift(x, t)
    densities = jax.jit(lambda p: fokker_planck.solve_fokker_planck(p, drift, (1.0,), grid, times))(p0)
    start = fokker_planck.sample_grid_density(jax.random.key(82), densities[-1], grid, NUM_SAMPLES)[:, None]
    cdf = lambda x: fokker_planck.grid_cdf(p0, grid, x)
    critical = statistics.kolmogorov_smirnov_critical_value(NUM_SAMPLES, 0.99)
    recovered = reverse_samples(time_reversal.grid_score(densities, times, grid), start, num_steps=200)
    assert float(statistics.kolmogorov_smirnov_statistic(recovered, cdf)) <= critical
    unrecovered = reverse_samples(time_reversal.zero_score, start, num_steps=200)
    assert float(statistics.kolmogorov_smirnov_statistic(unrecovered, cdf)) > 10 * critical
