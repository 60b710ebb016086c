"""Item 5: the finite-volume Fokker-Planck solver conserves mass, stays non-negative, converges to
the closed-form OU density, and agrees with simulated paths and the Gibbs law for a double well."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.stochastic import fokker_planck, models, sde_solvers, statistics
from genjax.stochastic.fokker_planck import Grid


def gaussian(points, mean, variance):
    return jnp.prod(jnp.exp(-0.5 * (points - mean) ** 2 / variance) / jnp.sqrt(2 * jnp.pi * variance), axis=-1)


def ou_errors(ou, mean0, variance0, lower, upper, cell_counts, t=1.0):
    dim = len(lower)
    diffusion = tuple(0.5 * float(s) ** 2 for s in np.broadcast_to(np.asarray(ou.sigma), (dim,)))
    mean, variance = ou.marginal_mean_variance(mean0, variance0, t)

    @functools.partial(jax.jit, static_argnums=0)
    def summary(grid):  # (L1 error at t, max |mass - 1| over the save times, min density)
        p0 = fokker_planck.discretize_density(lambda x: gaussian(x, mean0, variance0), grid)
        densities = fokker_planck.solve_fokker_planck(p0, ou.drift, diffusion, grid, jnp.array([0.0, 0.3, t]))
        error = fokker_planck.l1_distance(densities[-1], gaussian(grid.points(), mean, variance), grid)
        masses = jax.vmap(lambda d: fokker_planck.total_mass(d, grid))(densities)
        return error, jnp.max(jnp.abs(masses - 1.0)), jnp.min(densities)

    results = np.array([summary(Grid(lower, upper, (cells,) * dim)) for cells in cell_counts])
    return results[:, 0], results[:, 1].max(), results[:, 2].min()


def test_bernoulli_function():
    z = jnp.array([-30.0, -2.0, -1e-4, 0.0, 1e-4, 2.0, 30.0])
    expected = np.array([v / np.expm1(v) if v != 0 else 1.0 for v in np.asarray(z, np.float64)])
    np.testing.assert_allclose(fokker_planck.bernoulli_function(z), expected, rtol=1e-5)
    # B(-z) = B(z) + z: the identity behind the exact discrete Gibbs steady state
    np.testing.assert_allclose(fokker_planck.bernoulli_function(-z), fokker_planck.bernoulli_function(z) + z, rtol=1e-5, atol=1e-5)


def test_1d_ou_mass_positivity_and_second_order_convergence():
    ou = models.OrnsteinUhlenbeck(theta=1.0, sigma=1.0)
    errors, mass_error, minimum = ou_errors(ou, 1.5, 0.04, (-5.0,), (5.0,), (100, 200, 400))
    assert mass_error < 1e-5
    assert minimum >= 0.0
    assert np.all(errors[1:] < errors[:-1] / 3.0)  # second order: ratio 4 per halving of h
    assert errors[-1] < 5e-4


def test_2d_ou_against_product_of_closed_forms():
    ou = models.OrnsteinUhlenbeck(theta=jnp.array([1.0, 2.0]), sigma=jnp.array([1.0, 0.7]))
    errors, mass_error, minimum = ou_errors(ou, jnp.array([1.0, -1.0]), jnp.array([0.09, 0.09]), (-4.0, -4.0), (4.0, 4.0), (32, 64))
    assert mass_error < 1e-5
    assert minimum >= 0.0
    assert np.all(errors[1:] < errors[:-1] / 3.0)


def test_double_well_relaxes_to_gibbs_density():
    well = models.DoubleWell(depth=0.25, sigma=0.8)

    @functools.partial(jax.jit, static_argnums=0)
    def distance_to_gibbs(grid):
        p0 = fokker_planck.discretize_density(lambda x: gaussian(x, 0.3, 0.04), grid)
        late = fokker_planck.solve_fokker_planck(p0, well.drift, (0.5 * well.sigma**2,), grid, jnp.array([0.0, 60.0]))[-1]
        gibbs = fokker_planck.discretize_density(well.unnormalised_stationary_density, grid)
        return fokker_planck.l1_distance(late, gibbs, grid)

    errors = [float(distance_to_gibbs(Grid((-3.0,), (3.0,), (cells,)))) for cells in (100, 200)]
    assert errors[1] < errors[0] / 3.0 and errors[1] < 1e-3


def test_double_well_density_matches_histogram_of_simulated_paths():
    well = models.DoubleWell(depth=0.25, sigma=0.8)
    grid = Grid((-3.0,), (3.0,), (200,))
    times = (0.0, 1.0)
    p0 = fokker_planck.discretize_density(lambda x: gaussian(x, 0.3, 0.04), grid)
    solve = jax.jit(lambda p: fokker_planck.solve_fokker_planck(p, well.drift, (0.5 * well.sigma**2,), grid, jnp.asarray(times)))
    density = solve(p0)[-1]
    x0 = 0.3 + 0.2 * jax.random.normal(jax.random.key(50), (5000, 1))
    final = jax.jit(lambda k: sde_solvers.simulate_paths(k, well.drift, well.diffusion, x0, times, 50, "shark"))(jax.random.key(51))
    edges = jnp.linspace(-3.0, 3.0, 25)
    counts, _ = jnp.histogram(jnp.clip(final[:, -1, 0], -3.0, 3.0), bins=edges)
    probabilities = jnp.diff(fokker_planck.grid_cdf(density, grid, edges))
    _, _, p_value = statistics.chi_square_test(counts, probabilities)
    assert float(p_value) > 1e-3
    # control: the initial density is a different law, and the test sees it
    _, _, p_wrong = statistics.chi_square_test(counts, jnp.diff(fokker_planck.grid_cdf(p0, grid, edges)))
    assert float(p_wrong) < 1e-6


@pytest.mark.slow
def test_2d_double_well_density_matches_2d_histogram():
    well = models.DoubleWell(depth=0.25, sigma=0.8)
    cells, block = 64, 4
    grid = Grid((-3.0, -3.0), (3.0, 3.0), (cells, cells))
    start = jnp.array([0.0, 0.5])
    p0 = fokker_planck.discretize_density(lambda x: gaussian(x, start, jnp.array([0.04, 0.04])), grid)
    density = jax.jit(lambda p: fokker_planck.solve_fokker_planck(p, well.drift, (0.32, 0.32), grid, jnp.array([0.0, 1.5])))(p0)[-1]
    x0 = start + 0.2 * jax.random.normal(jax.random.key(52), (20000, 2))
    final = jax.jit(lambda k: sde_solvers.simulate_paths(k, well.drift, well.diffusion, x0, (0.0, 1.5), 150, "shark"))(jax.random.key(53))
    final = jnp.clip(final[:, -1], -3.0, 3.0)
    edges = jnp.linspace(-3.0, 3.0, cells // block + 1)
    counts, _, _ = jnp.histogram2d(final[:, 0], final[:, 1], bins=(edges, edges))
    mass = (density * grid.cell_volume).reshape(cells // block, block, cells // block, block).sum((1, 3))
    _, _, p_value = statistics.chi_square_test(counts, mass)
    assert float(p_value) > 1e-3


def test_sample_grid_density_and_cdf():
    grid = Grid((-4.0,), (4.0,), (400,))

    @jax.jit
    def distance_and_median_cdf(key):
        p = fokker_planck.discretize_density(lambda x: gaussian(x, 0.5, 1.0), grid)
        samples = fokker_planck.sample_grid_density(key, p, grid, 20000)
        distance = statistics.kolmogorov_smirnov_statistic(samples, lambda x: fokker_planck.grid_cdf(p, grid, x))
        return distance, fokker_planck.grid_cdf(p, grid, jnp.array(0.5))

    distance, median_cdf = distance_and_median_cdf(jax.random.key(54))
    assert float(distance) < statistics.kolmogorov_smirnov_critical_value(20000, 0.99)
    assert float(median_cdf) == pytest.approx(0.5, abs=1e-3)
