"""Item 7: the backward Kolmogorov equation, solved backward in time, agrees with Feynman-Kac Monte
Carlo for a nonlinear drift, and is the exact adjoint of the Fokker-Planck solver."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.stochastic import fokker_planck, kolmogorov_backward, models, sde_solvers
from genjax.stochastic.fokker_planck import Grid

WELL = models.DoubleWell(depth=0.25, sigma=0.8)
DIFFUSION = (0.5 * WELL.sigma**2,)
GRID = Grid((-3.0,), (3.0,), (300,))


def payoff(x):
    return jax.nn.sigmoid(4.0 * x[..., 0])


def solve(terminal, taus, drift=WELL.drift, diffusion=DIFFUSION):
    return jax.jit(lambda f: kolmogorov_backward.solve_backward_kolmogorov(f, drift, diffusion, GRID, taus))(terminal)


def test_generator_annihilates_constants():
    apply = jax.jit(lambda u: kolmogorov_backward.backward_generator(WELL.drift, DIFFUSION, GRID)[0](u))
    rate_scale = 2 * DIFFUSION[0] / GRID.spacing[0] ** 2  # entries of L are O(D / h^2), about 1e3 here
    np.testing.assert_allclose(apply(np.ones(GRID.num_cells, np.float32)), 0.0, atol=1e-6 * rate_scale)


def test_ou_conditional_mean_matches_closed_form():
    ou = models.OrnsteinUhlenbeck(theta=1.0, sigma=1.0)
    grid = Grid((-6.0,), (6.0,), (300,))
    u = jax.jit(lambda f: kolmogorov_backward.solve_backward_kolmogorov(f, ou.drift, (0.5,), grid, jnp.array([0.0, 1.0])))(
        grid.centers(0))[-1]
    inside = jnp.abs(grid.centers(0)) < 2.0  # E[X_T | X_t = x] = x e^{-(T - t)}
    np.testing.assert_allclose(u[inside], (grid.centers(0) * jnp.exp(-1.0))[inside], atol=2e-3)


def test_backward_pde_matches_feynman_kac_monte_carlo():
    taus = jnp.array([0.0, 0.5, 1.0])
    u_now = solve(payoff(GRID.points()), taus)[-1]
    no_diffusion = solve(payoff(GRID.points()), taus, diffusion=(1e-4,))[-1]  # drops the (sigma^2/2) u'' term
    starts = jnp.array([-1.0, -0.5, 0.5])

    def mc(key, x):
        x0 = jnp.full((2000, 1), x)
        final = sde_solvers.simulate_paths(key, WELL.drift, WELL.diffusion, x0, (0.0, 1.0), 50, "shark")[:, -1]
        return kolmogorov_backward.feynman_kac_estimate(final, payoff)

    means, ses = jax.jit(jax.vmap(mc))(jax.random.split(jax.random.key(70), 3), starts)
    pde = jnp.interp(starts, GRID.centers(0), u_now)
    assert np.all(np.abs(np.asarray(means - pde)) < 4 * np.asarray(ses))
    transport_only = jnp.interp(starts, GRID.centers(0), no_diffusion)
    assert np.all(np.abs(np.asarray(means - transport_only)) > 4 * np.asarray(ses))


def test_discrete_duality_with_fokker_planck():
    taus = jnp.array([0.0, 0.4, 1.0])
    u_now = solve(payoff(GRID.points()), taus)[-1]
    p0 = fokker_planck.discretize_density(lambda x: jnp.exp(-0.5 * (x[..., 0] + 0.5) ** 2 / 0.1), GRID)
    p_final = jax.jit(lambda p: fokker_planck.solve_fokker_planck(p, WELL.drift, DIFFUSION, GRID, taus))(p0)[-1]
    lhs = float(jnp.sum(u_now * p0) * GRID.cell_volume)
    rhs = float(jnp.sum(payoff(GRID.points()) * p_final) * GRID.cell_volume)
    assert lhs == pytest.approx(rhs, abs=1e-5)


def test_maximum_principle():
    terminal = np.asarray(payoff(GRID.points()))
    u = np.asarray(solve(terminal, np.linspace(0.0, 2.0, 5, dtype=np.float32)))
    assert u.min() >= terminal.min() - 1e-6
    assert u.max() <= terminal.max() + 1e-6
