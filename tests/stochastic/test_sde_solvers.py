"""Item 3: SDEs simulated with diffrax; strong and weak convergence orders on closed-form processes."""
import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.stochastic import convergence, models, sde_solvers, statistics

GBM = models.GeometricBrownianMotion(mu=1.0, sigma=0.8)
X0 = jnp.ones(1)


def exact_gbm(brownian):
    return GBM.exact_solution(X0, 1.0, brownian.evaluate(0.0, 1.0))


def strong_errors(solver, counts, num_paths, key=30, model=GBM, reference=exact_gbm, tree_tol=2.0**-8):
    keys = jax.random.split(jax.random.key(key), num_paths)
    run = jax.jit(lambda k: convergence.pathwise_errors(k, model.drift, model.diffusion, X0, 1.0, counts, solver, reference, tree_tol))
    return run(keys)[..., 0]


def test_stratonovich_drift_of_gbm():
    drift = sde_solvers.stratonovich_drift(GBM.drift, GBM.diffusion)
    x = jnp.array([0.5, 2.0])
    np.testing.assert_allclose(drift(0.0, x), (GBM.mu - 0.5 * GBM.sigma**2) * x, rtol=1e-6)
    additive = models.OrnsteinUhlenbeck(theta=2.0, sigma=1.0)
    np.testing.assert_allclose(sde_solvers.stratonovich_drift(additive.drift, additive.diffusion)(0.0, x), additive.drift(0.0, x))


def test_step_grid_contains_every_save_time():
    save_times = np.array([0.0, 0.3, 1.0, 2.5])
    grid = sde_solvers.step_grid(save_times, 50)
    assert np.all(np.diff(grid) > 0)
    assert all(np.any(np.isclose(grid, t)) for t in save_times)
    assert abs(len(grid) - 51) <= 3


def test_simulated_gbm_moments_match_closed_form():
    gbm = models.GeometricBrownianMotion(mu=0.5, sigma=0.4)
    x0 = jnp.ones((5000, 1))
    times = (0.0, 0.5, 1.0)
    paths = jax.jit(lambda k: sde_solvers.simulate_paths(k, gbm.drift, gbm.diffusion, x0, times, 100, "ito_milstein"))(jax.random.key(31))
    for i, t in enumerate(times[1:], start=1):
        mean, se = statistics.mean_and_standard_error(paths[:, i, 0])
        assert abs(float(mean) - float(gbm.moment(1.0, t, 1.0))) < 4 * float(se)


@pytest.mark.slow  # a convergence-order sweep over step sizes
def test_strong_order_windows_tell_euler_maruyama_from_milstein_on_gbm():
    """On multiplicative noise the window fit +- 4 SE holds Euler-Maruyama's order 1/2 and not
    Milstein's 1, and the other way round; both windows are narrower than +- 1/4."""
    counts = (16, 32, 64, 128)
    h = 1.0 / jnp.asarray(counts, jnp.float32)
    for solver, order, other in (("euler_maruyama", 0.5, 1.0), ("ito_milstein", 1.0, 0.5)):
        fitted, se = convergence.strong_order(h, strong_errors(solver, counts, 400))
        low, high = convergence.order_window(fitted, se)
        assert convergence.window_tells_orders_apart(se), (solver, float(se))
        assert low <= order <= high and not low <= other <= high, (solver, low, high)


def test_order_window():
    assert convergence.order_window(1.0, 0.05) == (0.8, 1.2)
    assert convergence.window_tells_orders_apart(0.06) and not convergence.window_tells_orders_apart(0.07)


def test_stratonovich_solver_needs_the_drift_correction():
    """Heun converges to the Stratonovich solution: fed the Ito drift it misses the Ito solution by
    O(1); with the converted drift (what solve_on_path does) it hits it."""
    keys = jax.random.split(jax.random.key(32), 100)

    def errors(key):
        brownian = sde_solvers.brownian_tree(key, X0.shape, 0.0, 1.0, 2.0**-8)
        exact = exact_gbm(brownian)
        converted = sde_solvers.solve_on_path(GBM.drift, GBM.diffusion, X0, brownian, 0.0, 1.0, 64, "heun")
        raw = diffrax.diffeqsolve(
            sde_solvers.sde_terms(GBM.drift, GBM.diffusion, brownian), diffrax.Heun(), 0.0, 1.0, 1.0 / 64, X0,
            saveat=diffrax.SaveAt(t1=True),
        ).ys[-1]
        return jnp.abs(converted - exact)[0], jnp.abs(raw - exact)[0]

    converted, raw = jax.jit(jax.vmap(errors))(keys)
    assert float(jnp.mean(converted)) < 0.02
    assert float(jnp.mean(raw)) > 0.3


def assert_order_in_window(order, step_counts, errors, weak=False):
    fit = convergence.weak_order if weak else convergence.strong_order
    fitted, se = fit(1.0 / jnp.asarray(step_counts, jnp.float32), errors)
    low, high = convergence.order_window(fitted, se)
    assert convergence.window_tells_orders_apart(se) and low <= order <= high, (order, low, high)


@pytest.mark.slow
def test_strong_orders_of_stratonovich_and_additive_noise_solvers():
    gbm_counts = (16, 32, 64, 128)
    for solver in ("heun", "spark"):  # scalar noise is commutative: strong order 1
        assert_order_in_window(1.0, gbm_counts, strong_errors(solver, gbm_counts, 400))
    ou = models.OrnsteinUhlenbeck(theta=2.0, sigma=1.0)
    well = models.DoubleWell(depth=0.25, sigma=1.0)

    def fine(model):
        return lambda bm: sde_solvers.solve_on_path(model.drift, model.diffusion, X0, bm, 0.0, 1.0, 1024, "shark")

    additive_counts, shark_counts = (8, 16, 32, 64, 128), (32, 64, 128, 256)
    # Additive noise: Euler-Maruyama is Milstein (order 1); ShARK reaches 3/2 from about 32 steps.
    em_errors = strong_errors("euler_maruyama", additive_counts, 400, model=ou, reference=fine(ou), tree_tol=2.0**-11)
    assert_order_in_window(1.0, additive_counts, em_errors)
    shark_errors = strong_errors("shark", shark_counts, 400, model=well, reference=fine(well), tree_tol=2.0**-11)
    assert_order_in_window(1.5, shark_counts, shark_errors)


@pytest.mark.slow
def test_weak_order_one_for_euler_maruyama():
    counts = (4, 8, 16, 32, 64)
    assert_order_in_window(1.0, counts, strong_errors("euler_maruyama", counts, 4000, key=33), weak=True)
