"""Optimal assignment on the device: Bertsekas' auction algorithm with epsilon scaling.

Given costs C [n, n], find the permutation pi minimising sum_i C[i, pi(i)] (the exact
optimal-transport plan between two uniform n-point sets; Bertsekas 1988, "The auction
algorithm: a distributed relaxation method for the assignment problem"). Persons i bid for
objects j with benefit -C[i, j] at prices p_j:

    j*  = argmax_j (-C[i, j] - p_j),   w = second best value,
    bid = p_{j*} + (best - w) + eps,

all unassigned persons at once (the Jacobi auction, a few dense [n, n] ops per round, fit for
`jit`); each object goes to its highest bidder and its price becomes that bid. A phase ends
when every person holds an object; its assignment satisfies eps-complementary slackness, so
its cost is within n eps of the optimum. Epsilon scaling (Bertsekas and Castanon 1991)
divides eps by `scale_factor` from phase to phase, keeping the prices and the pairs that
still satisfy eps-complementary slackness, down to

    eps_final = tolerance * sum_i min_j C[i, j] / n   <=   tolerance * (optimal cost) / n,

so the returned assignment costs at most (1 + tolerance) times the optimum: a certified
bound (eps never goes below 4 float32 ulps of max C, where bids would stop raising prices;
there the bound is n eps instead, and integer costs with n eps < 1 are solved exactly), measured against scipy's exact `linear_sum_assignment` in tests/test_couplings.py
(on 2-D Gaussian minibatches of 256 the gap is far below the bound; the README gives it).

Everything is `jax.lax` control flow on device arrays: no host callback. Under a mesh the
cost matrix of a sharded batch is formed by GSPMD's collectives (the assignment couples the
whole batch it is given).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def squared_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """C[i, j] = |x_i - y_j|^2 for x [n, ...], y [m, ...] (flattened per example)."""
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1)
    cost = jnp.sum(x**2, -1)[:, None] + jnp.sum(y**2, -1)[None, :] - 2.0 * x @ y.T
    return jnp.maximum(cost, 0.0)


def auction_assignment(
    cost: jax.Array,
    tolerance: float = 1e-3,
    scale_factor: float = 4.0,
    max_rounds: int = 100_000,
) -> jax.Array:
    """The permutation perm [n] (person i gets object perm[i]) of a near-optimal assignment.

    Args:
      cost: [n, n] costs C[i, j] >= 0.
      tolerance: relative optimality gap guaranteed on exit (see the module docstring).
      scale_factor: eps is divided by this from one phase to the next (> 1).
      max_rounds: bidding rounds over all phases; should they run out (never seen), the
        persons still unassigned take the free objects in order, so the result is always a
        permutation (it then carries no bound).
    """
    if not tolerance > 0:
        raise ValueError(f"tolerance={tolerance!r} must be > 0")
    if not scale_factor > 1:
        raise ValueError(f"scale_factor={scale_factor!r} must be > 1")
    n = cost.shape[0]
    if cost.shape != (n, n):
        raise ValueError(f"the cost matrix must be square, got {cost.shape}")
    cost = cost.astype(jnp.float32)
    benefit = -cost
    persons = objects = jnp.arange(n, dtype=jnp.int32)
    # Below a few float32 ulps of the prices a bid would not raise them: the precision floor.
    eps_floor = 4.0 * jnp.finfo(jnp.float32).eps * jnp.maximum(jnp.max(cost), 1e-30)
    eps_final = jnp.maximum(tolerance * jnp.sum(jnp.min(cost, axis=1)) / n, eps_floor)
    eps_start = jnp.maximum(jnp.max(cost) - jnp.min(cost), eps_final) / scale_factor

    def bidding_round(state):
        owner, assigned, prices, eps, rounds = state  # owner[j]: person holding object j, -1 if free
        values = benefit - prices[None, :]
        # Best and second-best values by max/argmax (lax.top_k inside a loop is a slow sort on CPU).
        best_object = jnp.argmax(values, axis=1).astype(jnp.int32)
        best = jnp.max(values, axis=1)
        second = jnp.max(jnp.where(objects[None, :] == best_object[:, None], -jnp.inf, values), axis=1)
        bids = prices[best_object] + (best - second) + eps
        bidding = assigned < 0
        bids = jnp.where(bidding, bids, -jnp.inf)
        highest = jnp.full((n,), -jnp.inf).at[best_object].max(bids)
        is_winner = bidding & (bids >= highest[best_object])
        # Ties: the lowest-numbered bidder wins the object.
        winner = jnp.full((n,), n, jnp.int32).at[best_object].min(jnp.where(is_winner, persons, n))
        has_bid = winner < n
        # The previous owners of the objects that got a bid lose them.
        previous = jnp.where(has_bid, owner, -1)
        assigned = assigned.at[jnp.where(previous >= 0, previous, n)].set(-1, mode="drop")
        assigned = assigned.at[jnp.where(has_bid, winner, n)].set(objects, mode="drop")
        owner = jnp.where(has_bid, winner, owner)
        prices = jnp.where(has_bid, highest, prices)
        return owner, assigned, prices, eps, rounds + 1

    def phase_running(state):
        _, assigned, _, _, rounds = state
        return jnp.any(assigned < 0) & (rounds < max_rounds)

    def phase(carry):
        owner, assigned, prices, eps, rounds = carry
        eps = jnp.maximum(eps / scale_factor, eps_final)
        # Keep the pairs that satisfy eps-complementary slackness for the new eps (value within
        # eps of the person's best); the others bid again, from the last phase's prices.
        values = benefit - prices[None, :]
        held = jnp.take_along_axis(values, jnp.maximum(assigned, 0)[:, None], axis=1)[:, 0]
        keep = (assigned >= 0) & (held >= jnp.max(values, axis=1) - eps)
        assigned = jnp.where(keep, assigned, -1)
        owner = jnp.full((n,), -1, jnp.int32).at[jnp.where(keep, assigned, n)].set(persons, mode="drop")
        return jax.lax.while_loop(phase_running, bidding_round, (owner, assigned, prices, eps, rounds))

    def more_phases(carry):
        _, assigned, _, eps, rounds = carry
        return ((eps > eps_final) | jnp.any(assigned < 0)) & (rounds < max_rounds)

    init = (
        jnp.full((n,), -1, jnp.int32),
        jnp.full((n,), -1, jnp.int32),
        jnp.zeros((n,), jnp.float32),
        eps_start * scale_factor,
        jnp.zeros((), jnp.int32),
    )
    owner, assigned, _, _, _ = jax.lax.while_loop(more_phases, phase, init)
    return _complete(owner, assigned)


def _complete(owner: jax.Array, assigned: jax.Array) -> jax.Array:
    """A permutation from a partial assignment: the unassigned persons, in order, take the
    free objects, in order (a no-op when the auction finished)."""
    n = assigned.shape[0]
    free_objects = jnp.argsort(owner >= 0, stable=True)  # free objects first
    waiting = jnp.argsort(assigned >= 0, stable=True)  # unassigned persons first
    rank = jnp.zeros((n,), jnp.int32).at[waiting].set(jnp.arange(n, dtype=jnp.int32))
    return jnp.where(assigned >= 0, assigned, free_objects[rank])


def assignment_cost(cost: jax.Array, perm: jax.Array) -> jax.Array:
    """sum_i C[i, perm[i]]."""
    return jnp.sum(jnp.take_along_axis(cost, perm[:, None], axis=1))
