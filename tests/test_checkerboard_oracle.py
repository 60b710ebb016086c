"""The exact diffused-checkerboard oracle against mathematics it must satisfy.

    p_t(x) = sum_{black S} (1/32) prod_d (1/alpha) [Phi((alpha b_d - x_d)/sigma) - Phi((alpha a_d - x_d)/sigma)]

Checks: the corners reproduce ``toy.checkerboard``; p_t integrates to 1; the small-noise
limit is the uniform density (rescaled by 1/alpha^2); p_t equals a Monte Carlo average of the
Gaussian kernel over checkerboard draws; the score equals finite differences of a float64
reference and satisfies Tweedie's identity against a Monte Carlo posterior mean; far-field
values and scores are finite and point the right way; the per-example process functions
jit, vmap and give the entropy log(32) at t_min. Monte Carlo comparisons allow 5 standard
errors; all keys are fixed, so the tests are deterministic.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from genjax.data import toy
from genjax.data.checkerboard_oracle import (
    BLACK_SQUARES,
    CHECKERBOARD_ENTROPY_NATS_PER_DIM,
    SQUARE_SIDE,
    checkerboard_log_prob,
    checkerboard_score,
    log_ndtr,
    perturbed_checkerboard_log_prob_fn,
    perturbed_checkerboard_score_fn,
)
from genjax.processes import EDMProcess, VPSDE

LOG_32 = math.log(32.0)

# One compile per padded input shape: alpha and sigma are traced, not static, and the points
# are padded to a power of two (at least 64), so the many small point sets share programs.
_batched_log_prob = jax.jit(jax.vmap(checkerboard_log_prob, in_axes=(0, None, None)))
_batched_score = jax.jit(jax.vmap(checkerboard_score, in_axes=(0, None, None)))


def _padded_call(batched, points, alpha: float, sigma: float) -> np.ndarray:
    points = np.atleast_2d(np.asarray(points, np.float32))
    num = len(points)
    padded = np.zeros((max(64, 1 << (num - 1).bit_length()), 2), np.float32)
    padded[:num] = points
    return np.asarray(batched(padded, np.float32(alpha), np.float32(sigma)), np.float64)[:num]


def _log_prob(points, alpha: float, sigma: float) -> np.ndarray:
    return _padded_call(_batched_log_prob, points, alpha, sigma)


def _score(points, alpha: float, sigma: float) -> np.ndarray:
    return _padded_call(_batched_score, points, alpha, sigma)


def _reference_log_prob_f64(points: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    """The defining sum evaluated directly in float64, upper tails by Phi(u) - Phi(l) =
    Phi(-l) - Phi(-u) (fine within ~35 standard deviations of the board)."""
    points = np.atleast_2d(np.asarray(points, np.float64))  # [N, 2]
    lower = np.asarray(BLACK_SQUARES, np.float64)  # [8, 2]
    lo = (alpha * lower[None] - points[:, None]) / sigma  # [N, 8, 2]
    hi = (alpha * (lower[None] + SQUARE_SIDE) - points[:, None]) / sigma
    ndtr = scipy.special.ndtr
    interval = np.where(lo > 0, ndtr(-lo) - ndtr(-hi), ndtr(hi) - ndtr(lo))
    mass = np.prod(interval, axis=-1) / alpha**2
    return np.log(np.sum(mass, axis=-1) / 32.0)


@pytest.fixture(scope="module")
def draws() -> np.ndarray:
    """200k checkerboard draws in float64, shared by the Monte Carlo tests."""
    return np.asarray(toy.checkerboard(jax.random.key(1), 200_000), np.float64)


# --- 1. the corners --------------------------------------------------------------------------
def test_black_squares_follow_the_rule_and_match_toy_samples():
    corners = np.asarray(BLACK_SQUARES)
    assert corners.shape == (8, 2) and corners.dtype == np.float32
    assert len({tuple(c) for c in corners}) == 8
    index = corners / SQUARE_SIDE
    assert np.all(np.isin(index, [-2.0, -1.0, 0.0, 1.0]))
    assert np.all(np.mod(index.sum(-1), 2) == 0)  # i + j even

    num = 20_000
    x = np.asarray(toy.checkerboard(jax.random.key(0), num), np.float64)
    inside = np.all((x[:, None] >= corners[None]) & (x[:, None] <= corners[None] + SQUARE_SIDE), axis=-1)
    assert np.all(inside.any(axis=1)), x[~inside.any(axis=1)][:5]  # every sample on a black square
    counts = inside.sum(axis=0)
    p = 1.0 / 8.0
    assert np.all(np.abs(counts - num * p) <= 4.0 * math.sqrt(num * p * (1 - p))), counts


# --- 2. normalisation ---------------------------------------------------------------------
@pytest.mark.parametrize("alpha, sigma", [(1.0, 0.05), (1.0, 1.0), (0.6, 0.5), (1.0, 5.0)])
def test_density_integrates_to_one(alpha, sigma):
    half = 4.0 * alpha + 8.0 * sigma  # the mass beyond 8 sigma is ~1e-15
    n = 512
    h = 2.0 * half / n
    centres = -half + h * (np.arange(n) + 0.5)  # midpoint rule, h <= sigma / 3
    grid = np.stack(np.meshgrid(centres, centres, indexing="ij"), axis=-1).reshape(-1, 2)
    total = np.sum(np.exp(_log_prob(grid, alpha, sigma))) * h * h
    assert abs(total - 1.0) < 1e-3, total


def test_log_prob_matches_float64_reference():
    rng = np.random.default_rng(0)
    points = rng.uniform(-6.0, 6.0, size=(64, 2))
    for alpha, sigma in [(1.0, 0.2), (0.8, 0.6), (0.3, 1.0), (1.0, 3.0)]:
        np.testing.assert_allclose(
            _log_prob(points, alpha, sigma), _reference_log_prob_f64(points, alpha, sigma), atol=2e-4, rtol=1e-5
        )


# --- 3. the small-noise limit ---------------------------------------------------------------
def test_small_noise_limit_is_the_uniform_density():
    corners = np.asarray(BLACK_SQUARES, np.float64)
    offsets = np.asarray([[1.0, 1.0], [0.3, 0.3], [1.7, 0.4], [0.5, 1.6]])
    inside_black = (corners[:, None] + offsets[None]).reshape(-1, 2)
    white_centres = np.asarray(
        [[2 * i + 1.0, 2 * j + 1.0] for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 1]
    )
    assert white_centres.shape == (8, 2)

    np.testing.assert_allclose(_log_prob(inside_black, 1.0, 1e-3), -LOG_32, atol=1e-4)
    assert np.all(_log_prob(white_centres, 1.0, 1e-3) < -1e4)  # distance 1 at sigma 1e-3: ~ -5e5

    alpha = 0.5
    np.testing.assert_allclose(
        _log_prob(alpha * inside_black, alpha, 1e-3), -LOG_32 - 2.0 * math.log(alpha), atol=1e-4
    )
    assert np.all(_log_prob(alpha * white_centres, alpha, 1e-3) < -1e4)


# --- 4. against Monte Carlo -----------------------------------------------------------------
MC_POINTS = np.asarray([[0.5, 0.5], [1.0, -1.0], [3.9, 0.1], [-2.5, 3.5], [4.5, -4.5]])
MC_COEFFICIENTS = [(1.0, 0.3), (0.7, 0.5), (1.0, 1.5)]


def _gaussian_kernel(x: np.ndarray, draws: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    """N(x; alpha x0, sigma^2 I) for every draw x0, float64, shape [num]."""
    sq = np.sum((x[None] - alpha * draws) ** 2, axis=-1)
    return np.exp(-0.5 * sq / sigma**2) / (2.0 * math.pi * sigma**2)


@pytest.mark.parametrize("alpha, sigma", MC_COEFFICIENTS)
def test_density_matches_monte_carlo(draws, alpha, sigma):
    exact = np.exp(_log_prob(MC_POINTS, alpha, sigma))
    for x, p in zip(MC_POINTS, exact):
        k = _gaussian_kernel(x, draws, alpha, sigma)
        mean, se = k.mean(), k.std() / math.sqrt(len(k))
        assert abs(p - mean) <= 5.0 * se + 1e-6 * p, (x, p, mean, se)
        assert se < 0.05 * mean or mean < 1e-4  # the comparison has teeth


# --- 5. the score ---------------------------------------------------------------------------
@pytest.mark.parametrize("alpha, sigma", [(1.0, 0.3), (0.7, 0.5), (0.2, 1.0), (1.0, 2.0)])
def test_score_matches_finite_differences_of_float64_reference(alpha, sigma):
    rng = np.random.default_rng(1)
    points = rng.uniform(-5.5, 5.5, size=(32, 2))
    h = 1e-5
    reference = _reference_log_prob_f64
    fd = np.stack(
        [
            (reference(points + h * e, alpha, sigma) - reference(points - h * e, alpha, sigma)) / (2.0 * h)
            for e in np.eye(2)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(_score(points, alpha, sigma), fd, atol=2e-3, rtol=2e-3)


def test_score_matches_float32_finite_differences_of_log_prob():
    points = np.asarray([[0.7, 1.9], [2.1, -0.2], [-3.0, -3.0], [5.0, 1.0]])
    alpha, sigma, h = 0.9, 0.4, 1e-2
    fd = np.stack(
        [
            (_log_prob(points + h * e, alpha, sigma) - _log_prob(points - h * e, alpha, sigma)) / (2.0 * h)
            for e in np.eye(2)
        ],
        axis=-1,
    )
    # O(h^2 / sigma^3) truncation plus float32 round-off eps |log p| / h.
    np.testing.assert_allclose(_score(points, alpha, sigma), fd, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("alpha, sigma", [(1.0, 0.5), (0.6, 0.8), (1.0, 2.0)])
def test_score_satisfies_tweedie_against_monte_carlo_posterior_mean(draws, alpha, sigma):
    points = np.asarray([[0.9, 1.1], [1.0, -1.0], [3.8, -0.5], [-1.5, 2.5]]) * alpha
    denoised = (points + sigma**2 * _score(points, alpha, sigma)) / alpha
    for x, d in zip(points, denoised):
        w = _gaussian_kernel(x, draws, alpha, sigma)
        w = w / w.sum()
        mean = np.sum(w[:, None] * draws, axis=0)
        se = np.sqrt(np.sum(w[:, None] ** 2 * (draws - mean) ** 2, axis=0))  # delta method
        assert np.all(np.abs(d - mean) <= 5.0 * se + 1e-3), (x, d, mean, se)
        assert 1.0 / np.sum(w**2) > 2000  # enough effective samples for the check to bite


# --- 6. far field -----------------------------------------------------------------------------
def _nearest_black_point(x: np.ndarray) -> np.ndarray:
    corners = np.asarray(BLACK_SQUARES, np.float64)
    nearest = np.clip(x[None], corners, corners + SQUARE_SIDE)
    return nearest[np.argmin(np.sum((nearest - x) ** 2, axis=-1))]


@pytest.mark.parametrize("sigma", [1e-3, 0.1, 10.0])
def test_far_field_is_finite_and_points_home(sigma):
    x = np.asarray([60.0, -80.0])
    log_p = _log_prob(x, 1.0, sigma)[0]
    score = _score(x, 1.0, sigma)[0]
    assert np.isfinite(log_p) and np.all(np.isfinite(score)), (log_p, score)
    if sigma <= 0.1:
        # Laplace: the mass sits at the nearest black point, score ~ (nearest - x) / sigma^2.
        nearest = _nearest_black_point(x)
        np.testing.assert_allclose(score, (nearest - x) / sigma**2, rtol=1e-3)
        expected_log_p = -np.sum((x - nearest) ** 2) / (2 * sigma**2)
        assert abs(log_p - expected_log_p) < 1e-3 * abs(expected_log_p)
    else:
        # sigma >> board: close to N(mean, (var0 + sigma^2) I), moments from the corners.
        centres = np.asarray(BLACK_SQUARES, np.float64) + SQUARE_SIDE / 2
        mean = centres.mean(axis=0)
        var0 = np.mean(centres**2, axis=0) - mean**2 + SQUARE_SIDE**2 / 12.0
        np.testing.assert_allclose(mean, [0.0, 0.0], atol=1e-12)  # the board is centred
        gaussian = -(x - mean) / (sigma**2 + var0)
        cosine = score @ gaussian / (np.linalg.norm(score) * np.linalg.norm(gaussian))
        assert cosine > 0.999, (score, gaussian)
        assert 0.9 < np.linalg.norm(score) / np.linalg.norm(gaussian) < 1.15, (score, gaussian)


def test_far_field_grid_is_finite_at_every_scale():
    axis = np.linspace(-100.0, 100.0, 21)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    for alpha, sigma in [(1.0, 1e-3), (1.0, 0.01), (0.5, 0.1), (6.6e-3, 1.0), (1.0, 80.0)]:
        assert np.all(np.isfinite(_log_prob(grid, alpha, sigma)))
        assert np.all(np.isfinite(_score(grid, alpha, sigma)))


def test_log_ndtr_derivative_is_the_inverse_mills_ratio_far_in_the_tail():
    """jax's own d/dz log_ndtr is wrong in float32 below z ~ -1e3 (1.0 at z = -5.6e4); ours
    must match phi/Phi, computed in float64 as exp(log phi - log Phi) (~ -z out there)."""
    z = np.asarray([-5.6e4, -1e4, -1e3, -75.0, -10.5, -9.5, -3.0, 0.0, 4.0, 12.0])
    grad = np.asarray(jax.jit(jax.vmap(jax.grad(log_ndtr)))(np.asarray(z, np.float32)), np.float64)
    log_phi = -0.5 * z**2 - 0.5 * math.log(2.0 * math.pi)
    expected = np.exp(log_phi - scipy.special.log_ndtr(z))
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-30)


# --- 7. the per-example process functions ---------------------------------------------------
@pytest.mark.parametrize("process", [VPSDE(), EDMProcess()], ids=["vp", "edm"])
def test_process_functions_jit_vmap_and_entropy(process):
    num = 4096
    x0 = toy.checkerboard(jax.random.key(2), num)
    log_prob_fn = jax.jit(jax.vmap(perturbed_checkerboard_log_prob_fn(process), in_axes=(0, None)))
    score_fn = jax.jit(jax.vmap(perturbed_checkerboard_score_fn(process), in_axes=(0, 0)))

    t_min = jnp.float32(process.t_min_sample)
    log_p = np.asarray(log_prob_fn(x0, t_min), np.float64)
    assert log_p.shape == (num,) and np.all(np.isfinite(log_p))
    nll_per_dim = -log_p.mean() / 2.0
    assert abs(nll_per_dim - CHECKERBOARD_ENTROPY_NATS_PER_DIM) < 0.03, nll_per_dim
    assert CHECKERBOARD_ENTROPY_NATS_PER_DIM == pytest.approx(LOG_32 / 2.0)

    # Per-example times across the whole range, on noised points.
    times = np.linspace(process.t_min_sample, process.t_max, num, dtype=np.float32)
    alpha, sigma = (np.asarray(c) for c in jax.jit(jax.vmap(process.marginal_coefficients))(times))
    noise = np.asarray(jax.random.normal(jax.random.key(3), x0.shape))
    xt = (alpha[:, None] * np.asarray(x0) + sigma[:, None] * noise).astype(np.float32)
    score = np.asarray(score_fn(xt, times))
    assert score.shape == (num, 2) and np.all(np.isfinite(score))
    # The wrapper is the plain oracle at (alpha(t), sigma(t)).
    i = num // 3
    np.testing.assert_allclose(score[i], _score(xt[i], alpha[i], sigma[i])[0], rtol=1e-5, atol=1e-6)


def test_vp_terminal_marginal_is_nearly_standard_normal():
    process = VPSDE()
    alpha, sigma = process.marginal_coefficients(jnp.float32(process.t_max))
    points = np.asarray([[0.0, 0.0], [1.0, -0.5], [-2.0, 1.5]])
    # p_T = N(0, sigma^2 I) smoothed by a board of size ~alpha * 4 ~ 0.03: log p ~ log N(x; 0, I).
    expected = -0.5 * np.sum(points**2, axis=-1) - math.log(2.0 * math.pi)
    np.testing.assert_allclose(_log_prob(points, float(alpha), float(sigma)), expected, atol=2e-3)
