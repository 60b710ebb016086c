"""Couplings on the device against exact references.

  * the auction assignment is a permutation whose cost is within its certified relative gap
    (`tolerance`) of scipy's exact `linear_sum_assignment` on the same minibatches;
  * for Gaussian to Gaussian, the minibatch OT pairing converges to the linear Monge map
    T(x) = m_y + A (x - m_x), A = S_x^{-1/2} (S_x^{1/2} S_y S_x^{1/2})^{1/2} S_x^{-1/2},
    as the batch grows (the mean squared distance of a pair from T falls);
  * the Sinkhorn plan has uniform marginals and its transport cost lies within
    epsilon log n of the exact optimum (the entropic bound);
  * the annealed fixed-iteration plan of sinkhorn_ot, at the process defaults, costs within
    3% of the exact assignment with columns uniform to 0.1 (L1), and converges to the exact
    plan (cost and marginals) as epsilon falls and the iterations grow;
  * the coupling inside the CFM loss gives the same loss on a sharded batch under jit.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from scipy.linalg import sqrtm
from scipy.optimize import linear_sum_assignment

from genjax.couplings import (assignment_cost, auction_assignment, sample_plan_rows, sinkhorn_conditional_log_plan,
                              sinkhorn_log_plan, squared_distances)
from genjax.objectives.flow_matching import conditional_flow_matching_loss
from genjax.processes import views
from genjax.processes.flow_matching import FlowMatchingPath

MEAN_X, MEAN_Y = np.array([3.0, -1.0]), np.array([0.0, 0.0])
COV_X = np.array([[2.0, 0.6], [0.6, 0.5]])
COV_Y = np.eye(2)


def gaussian_batches(seed, n):
    k1, k2 = jax.random.split(jax.random.key(seed))
    lx, ly = np.linalg.cholesky(COV_X), np.linalg.cholesky(COV_Y)
    x = MEAN_X + jax.random.normal(k1, (n, 2)) @ lx.T
    y = MEAN_Y + jax.random.normal(k2, (n, 2)) @ ly.T
    return x.astype(jnp.float32), y.astype(jnp.float32)


def exact_cost(cost):
    cost = np.asarray(cost, np.float64)
    rows, cols = linear_sum_assignment(cost)
    return cost[rows, cols].sum()


@pytest.mark.parametrize("tolerance", [1e-2, 1e-4])
def test_auction_is_within_its_certified_gap_of_scipy(tolerance):
    assign = jax.jit(lambda c: auction_assignment(c, tolerance=tolerance))
    gaps = []
    for seed in range(3):
        x, y = gaussian_batches(seed, 128)
        cost = squared_distances(x, y)
        perm = np.asarray(assign(cost))
        assert sorted(perm.tolist()) == list(range(128))
        ours = float(np.asarray(cost, np.float64)[np.arange(128), perm].sum())
        gaps.append(ours / exact_cost(cost) - 1.0)
    assert max(gaps) <= tolerance
    assert min(gaps) >= -1e-5  # never better than the optimum (float32 rounding aside)


def test_auction_solves_a_small_problem_exactly():
    """Integer costs with a unique optimum: below 1/n relative gap the auction is exact."""
    cost = jnp.asarray(np.random.default_rng(0).integers(0, 100, (24, 24)), jnp.float32)
    perm = np.asarray(jax.jit(lambda c: auction_assignment(c, tolerance=1e-6))(cost))
    assert float(assignment_cost(cost, jnp.asarray(perm))) == exact_cost(cost)


def monge_map(x):
    root = np.real(sqrtm(COV_X))
    inverse_root = np.linalg.inv(root)
    matrix = inverse_root @ np.real(sqrtm(root @ COV_Y @ root)) @ inverse_root
    return MEAN_Y + (x - MEAN_X) @ matrix.T


def test_minibatch_ot_converges_to_the_monge_map():
    assign = jax.jit(lambda c: auction_assignment(c, tolerance=1e-3))
    errors = {}
    for n in (16, 64, 256):
        values = []
        for seed in range(3):
            x, y = gaussian_batches(10 + seed, n)
            perm = np.asarray(assign(squared_distances(x, y)))
            values.append(np.mean(np.sum((np.asarray(y)[perm] - monge_map(np.asarray(x, np.float64))) ** 2, -1)))
        errors[n] = float(np.mean(values))
    # Independent pairs would sit at E|y - T(x)|^2 = 2 tr(COV_Y) + ... ~ 2; the OT pairing falls with n.
    assert errors[16] > errors[64] > errors[256]
    assert errors[256] < 0.5 * errors[16]
    assert errors[256] < 0.15


def test_sinkhorn_marginals_and_entropic_bound():
    x, y = gaussian_batches(3, 128)
    cost = squared_distances(x, y)
    epsilon = 0.05
    log_plan = jax.jit(lambda c: sinkhorn_log_plan(c, epsilon, tolerance=1e-5, max_iterations=5000))(cost)
    plan = np.exp(np.asarray(log_plan, np.float64))
    np.testing.assert_allclose(plan.sum(1), 1 / 128, rtol=1e-3)
    np.testing.assert_allclose(plan.sum(0), 1 / 128, rtol=1e-3)
    transport = float(np.sum(plan * np.asarray(cost, np.float64)))
    optimum = exact_cost(cost) / 128
    assert optimum - 1e-4 <= transport <= optimum + epsilon * np.log(128)
    rows = np.asarray(sample_plan_rows(jax.random.key(0), log_plan))
    assert rows.shape == (128,) and rows.min() >= 0 and rows.max() < 128


def annealed_plan_figures(relative_epsilon, num_levels, iterations_per_level, n=256, seeds=range(3)):
    """(largest relative cost gap of the plan to the exact assignment, largest column L1 error)."""
    solve = jax.jit(lambda c: sinkhorn_conditional_log_plan(c, relative_epsilon, num_levels, iterations_per_level))
    gaps, column_errors = [], []
    for seed in seeds:
        x, y = gaussian_batches(20 + seed, n)
        cost = squared_distances(x, y)
        plan = np.exp(np.asarray(solve(cost), np.float64)) / n
        np.testing.assert_allclose(plan.sum(1), 1 / n, rtol=1e-5)  # rows: exact distributions
        gaps.append(float(np.sum(plan * np.asarray(cost, np.float64))) / (exact_cost(cost) / n) - 1.0)
        column_errors.append(float(np.abs(plan.sum(0) - 1 / n).sum()))
    return max(gaps), max(column_errors)


def test_sinkhorn_ot_defaults_are_near_exact():
    process = FlowMatchingPath(coupling="sinkhorn_ot")
    gap, column_error = annealed_plan_figures(process.ot_epsilon, process.ot_epsilon_levels, process.ot_iterations)
    assert 0.0 <= gap < 0.03 and column_error < 0.1, (gap, column_error)


def test_sinkhorn_ot_converges_to_the_exact_plan():
    loose = annealed_plan_figures(0.01, 5, 10, seeds=[0])
    tight = annealed_plan_figures(1e-3, 20, 50, seeds=[0])
    # (a plan whose columns are off by L1 e can undercut the optimum by about e times the cost range)
    assert abs(tight[0]) < 0.004 and tight[1] < 0.02, tight
    assert abs(tight[0]) < 0.5 * loose[0] and tight[1] < 0.5 * loose[1], (loose, tight)


def test_sinkhorn_ot_draws_pairs_from_its_plan():
    """The coupling keeps x0 and draws x1 by rows of the plan: close pairs, most x1 used."""
    x, y = gaussian_batches(7, 256)
    pairs = FlowMatchingPath(coupling="sinkhorn_ot").couple(jax.random.key(1), x, y)
    rows = np.asarray(pairs)
    index = np.array([np.flatnonzero((np.asarray(y) == row).all(1))[0] for row in rows])
    cost = np.asarray(squared_distances(x, y), np.float64)
    assert cost[np.arange(256), index].sum() < 1.1 * exact_cost(cost)
    assert len(set(index.tolist())) > 0.5 * 256


def test_coupled_loss_is_the_same_on_a_sharded_batch():
    """Under jit with the batch sharded over 4 devices, GSPMD gathers what the assignment
    needs: the loss equals the single-device one."""
    devices = jax.devices()[:4]
    if len(devices) < 4:
        pytest.skip("needs 4 devices")
    process = FlowMatchingPath(coupling="exact_ot")
    model = views.Model.from_per_example(lambda x, t: jnp.tanh(x) * t, "velocity")
    x0, _ = gaussian_batches(5, 64)
    keys = jax.random.split(jax.random.key(6), 64)
    loss = jax.jit(lambda x, k: conditional_flow_matching_loss(model, process, x, k))
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    sharded = jax.device_put(x0, NamedSharding(mesh, PartitionSpec("data")))
    sharded_keys = jax.device_put(keys, NamedSharding(mesh, PartitionSpec("data")))
    np.testing.assert_allclose(float(loss(sharded, sharded_keys)), float(loss(x0, keys)), rtol=1e-5)
    independent = jax.jit(lambda x, k: conditional_flow_matching_loss(model, FlowMatchingPath(), x, k))(x0, keys)
    assert abs(float(independent) - float(loss(x0, keys))) > 1e-3  # the coupling changed the pairs
