"""Item 4: Ito's lemma; the Ito integral of W dW is (W_T^2 - T)/2, the Stratonovich one W_T^2/2."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.stochastic import brownian, ito, models, sde_solvers, statistics

T = 1.5


def paths_on_fine_grid(coarse_steps, num_paths=20000, key=40):
    return brownian.brownian_paths(jax.random.key(key), num_paths, 2 * coarse_steps, T)


def test_ito_sum_is_telescoping_identity_path_by_path():
    fine = paths_on_fine_grid(64, 100)
    coarse = fine[:, ::2]
    identity = 0.5 * (coarse[:, -1] ** 2 - brownian.quadratic_variation(coarse))
    np.testing.assert_allclose(ito.ito_sum(coarse, coarse), identity, atol=1e-4)


def test_ito_and_midpoint_sums_converge_to_their_closed_forms():
    n = 256

    @jax.jit
    def statistics_of_the_sums():
        fine = paths_on_fine_grid(n)
        coarse = fine[:, ::2]
        w_t = fine[:, -1]
        ito_error = ito.ito_sum(coarse, coarse) - ito.ito_integral_w_dw(w_t, T)
        strat_error = ito.stratonovich_midpoint_sum(fine, fine) - ito.stratonovich_integral_w_dw(w_t)
        gap = ito.stratonovich_midpoint_sum(fine, fine) - ito.ito_sum(coarse, coarse)
        not_ito = ito.stratonovich_midpoint_sum(fine, fine) - ito.ito_integral_w_dw(w_t, T)
        return (statistics.mean_and_standard_error(ito_error**2), statistics.mean_and_standard_error(strat_error**2),
                statistics.mean_and_standard_error(gap), jnp.mean(jnp.abs(not_ito - T / 2)))

    (msq_ito, se_ito), (msq_strat, se_strat), (gap, gap_se), not_ito_distance = jax.tree.map(
        float, statistics_of_the_sums())
    assert abs(msq_ito - T**2 / (2 * n)) < 4 * se_ito
    assert abs(msq_strat - T**2 / (4 * n)) < 4 * se_strat
    # the two integrals differ by T/2 on average (the Ito correction), which is far from 0
    assert abs(gap - T / 2) < 4 * gap_se
    assert abs(gap) > 100 * gap_se
    # and the midpoint sum is NOT close to the Ito value path by path
    assert not_ito_distance < 0.1 < T / 2


def test_generator_by_autodiff_gives_ito_correction():
    gbm = models.GeometricBrownianMotion(mu=0.3, sigma=0.7)
    for power in (1.0, 2.0, 3.0):
        f = lambda x, p=power: x**p
        x = 1.7
        ito_rate = ito.ito_generator(f, gbm.drift, gbm.diffusion)(0.0, x) / f(x)
        chain_rate = ito.ito_generator(f, gbm.drift, gbm.diffusion, second_order=False)(0.0, x) / f(x)
        assert float(ito_rate) == pytest.approx(power * gbm.mu + 0.5 * power * (power - 1) * gbm.sigma**2, rel=1e-5)
        assert float(chain_rate) == pytest.approx(power * gbm.mu, rel=1e-5)


def test_monte_carlo_moment_of_gbm_follows_ito_not_chain_rule():
    gbm = models.GeometricBrownianMotion(mu=0.5, sigma=0.6)
    x0 = jnp.ones((20000, 1))
    mean, se = jax.jit(lambda k: statistics.mean_and_standard_error(sde_solvers.simulate_paths(
        k, gbm.drift, gbm.diffusion, x0, (0.0, 1.0), 100, "ito_milstein")[:, -1, 0] ** 2))(jax.random.key(41))
    f = lambda x: x**2
    ito_value = jnp.exp(ito.ito_generator(f, gbm.drift, gbm.diffusion)(0.0, 1.0))
    chain_value = jnp.exp(ito.ito_generator(f, gbm.drift, gbm.diffusion, second_order=False)(0.0, 1.0))
    assert abs(float(mean) - float(ito_value)) < 4 * float(se)
    assert abs(float(mean) - float(chain_value)) > 4 * float(se)
