"""Two-sample distances against exact references, their noise floor, and the figures."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.data import toy
from genjax.evaluate.plots import save_grid_of_datasets, save_samples_figure
from genjax.evaluate.two_sample import mmd, random_unit_directions, sample_quality, sliced_wasserstein

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _draw_many(generator, key, repeats: int, num: int) -> jax.Array:
    """repeats independent sets of num points, shape [repeats, num, 2], in one compiled call."""
    keys = jax.random.split(key, repeats)
    return jax.jit(jax.vmap(lambda k: generator(k, num)))(keys)


def _mmd_reference(x: np.ndarray, y: np.ndarray, bandwidths) -> float:
    """Gretton et al. (2012) eq. 3, written out directly in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def gram(a, b):
        squared = np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
        return sum(np.exp(-squared / (2 * h**2)) for h in bandwidths)

    n, m = len(x), len(y)
    k_xx, k_yy, k_xy = gram(x, x), gram(y, y), gram(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return within_x + within_y - 2 * k_xy.mean()


@pytest.mark.parametrize("dim, block_size", [(2, 4), (2, 512), (3, 8)])
def test_mmd_matches_a_direct_reference_including_the_blocked_path(dim, block_size):
    rng = np.random.default_rng(dim)
    x = rng.normal(size=(37, dim)).astype(np.float32)
    y = (1.3 * rng.normal(size=(23, dim)) + 0.4).astype(np.float32)
    bandwidths = (0.3, 1.0, 2.5)
    expected = _mmd_reference(x, y, bandwidths)
    got = float(mmd(x, y, bandwidths=bandwidths, block_size=block_size))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # Identical sets: the unbiased estimate is the mean off-diagonal gap, slightly negative.
    np.testing.assert_allclose(float(mmd(x, x, bandwidths=bandwidths, block_size=block_size)),
                               _mmd_reference(x, x, bandwidths), rtol=1e-4, atol=1e-6)


def test_mmd_is_consistent_with_zero_for_one_distribution_and_large_for_two():
    repeats, num = 6, 1000
    data = _draw_many(toy.eight_gaussians, jax.random.key(0), 2 * repeats, num)
    rings = _draw_many(toy.concentric_rings, jax.random.key(1), repeats, num)
    same = np.array([float(mmd(data[2 * i], data[2 * i + 1])) for i in range(repeats)])
    different = np.array([float(mmd(data[2 * i], rings[i])) for i in range(repeats)])
    # The estimator is unbiased: its mean over repeats is within noise of 0.
    noise = same.std(ddof=1) / math.sqrt(repeats)
    assert abs(same.mean()) <= 4 * noise
    assert np.max(np.abs(same)) < 0.01
    assert np.min(different) > 0.1 and np.min(different) > 50 * np.max(np.abs(same))


def test_sliced_wasserstein_noise_floor_is_small_and_other_distributions_are_far():
    repeats, num = 4, 2000
    data = _draw_many(toy.two_moons, jax.random.key(2), 2 * repeats, num)
    rolls = _draw_many(toy.swiss_roll, jax.random.key(3), repeats, num)
    keys = jax.random.split(jax.random.key(4), repeats)
    swd = lambda i, other: float(sliced_wasserstein(keys[i], data[2 * i], other))
    same = np.array([swd(i, data[2 * i + 1]) for i in range(repeats)])
    different = np.array([swd(i, rolls[i]) for i in range(repeats)])
    # The floor (~0.1 at 2000 points) is small against the data's spread (~1.4 per axis);
    # moons and roll differ by ~0.5.
    assert np.all(same >= 0) and np.max(same) < 0.15
    assert np.min(different) > 3 * np.max(same)


def test_sliced_wasserstein_of_a_translation_is_exactly_the_projected_shift():
    # y = x + delta: every slice is shifted by <theta, delta>, so the estimate is exactly
    # sqrt(mean_theta <theta, delta>^2) over the directions drawn from the same key.
    key = jax.random.key(5)
    x = jax.random.normal(jax.random.key(6), (300, 3))
    delta = jnp.asarray([1.0, -2.0, 0.5])
    directions = random_unit_directions(key, 64, 3)
    expected = float(jnp.sqrt(jnp.mean((directions @ delta) ** 2)))
    swd = lambda y: float(sliced_wasserstein(key, x, y, num_projections=64))
    np.testing.assert_allclose(swd(x + delta), expected, rtol=1e-4)
    # Unequal sizes: x + delta repeated three times is the same empirical measure.
    np.testing.assert_allclose(swd(jnp.tile(x + delta, (3, 1))), expected, rtol=1e-4)
    np.testing.assert_allclose(swd(jnp.tile(x, (2, 1))), 0.0, atol=1e-5)


@pytest.mark.parametrize("dim", [2, 5])
def test_sliced_wasserstein_of_shifted_gaussians_is_the_shift_over_sqrt_dim(dim):
    # For theta uniform on S^{d-1}, E[theta theta^T] = I / d, so SW_2^2 = E<theta, delta>^2 =
    # |delta|^2 / d. With c = <theta, delta / |delta|>, c^2 ~ Beta(1/2, (d-1)/2), whose
    # variance 2 (d-1) / (d^2 (d+2)) sets the Monte Carlo error over the directions; the
    # finite samples add a small W_2^2 between two fresh Gaussian clouds.
    num, num_projections = 1000, 500
    delta = jnp.full((dim,), 1.5)
    x = jax.random.normal(jax.random.key(7), (num, dim))
    y = jax.random.normal(jax.random.key(8), (num, dim)) + delta
    estimate = float(sliced_wasserstein(jax.random.key(9), x, y, num_projections=num_projections))
    shift_squared = float(jnp.sum(delta**2))
    projection_error = shift_squared * math.sqrt(2 * (dim - 1) / (dim**2 * (dim + 2)) / num_projections)
    sample_floor = 0.02  # W_2^2 of two 1000-point samples of one 1-D Gaussian is ~5e-3
    assert abs(estimate**2 - shift_squared / dim) <= 4 * projection_error + sample_floor


def test_sliced_wasserstein_with_unequal_sizes_is_the_exact_one_dimensional_w2():
    # In one dimension the directions are +-1 and W_2 is symmetric under x -> -x, so the
    # sliced distance is W_2 itself. {0, 1, 2} vs {0, 2}: the quantile functions differ by 1
    # on (1/3, 2/3], so W_2^2 = 1/3.
    x = jnp.asarray([[2.0], [0.0], [1.0]])
    y = jnp.asarray([[2.0], [0.0]])
    np.testing.assert_allclose(float(sliced_wasserstein(jax.random.key(0), x, y, num_projections=8)),
                               math.sqrt(1 / 3), rtol=1e-5)
    # Random sets, against the quantile integral on a fine grid of levels.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(17, 1)), 2.0 * rng.normal(size=(11, 1)) + 1.0
    levels = (np.arange(200_000) + 0.5) / 200_000
    quantile = lambda points, u: np.sort(points[:, 0])[np.ceil(u * len(points)).astype(int) - 1]
    expected = math.sqrt(np.mean((quantile(a, levels) - quantile(b, levels)) ** 2))
    got = float(sliced_wasserstein(jax.random.key(1), a, b, num_projections=8))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_sample_quality_reports_both_distances_under_stable_names():
    draw = jax.jit(toy.pinwheel, static_argnums=1)
    samples, reference = draw(jax.random.key(0), 500), draw(jax.random.key(1), 600)
    key = jax.random.key(2)
    report = sample_quality(key, samples, reference)
    assert set(report) == {"swd", "mmd"}
    assert all(isinstance(value, float) for value in report.values())
    assert report["swd"] == float(sliced_wasserstein(key, samples, reference))
    assert report["mmd"] == float(mmd(samples, reference))


def test_figures_are_small_pngs(tmp_path):
    draw = jax.jit(toy.two_spirals, static_argnums=1)
    data = draw(jax.random.key(0), 4000)
    samples = np.array(draw(jax.random.key(1), 4000))
    samples[:3] = np.nan  # diverged samples are dropped, not fatal
    prior = jax.random.normal(jax.random.key(2), (3000, 2))
    figure = save_samples_figure(tmp_path / "out" / "samples.png", data, samples, title="spirals",
                                 extra_panels={"prior": prior})
    grid = save_grid_of_datasets(tmp_path / "grid.png", {"spirals": data, "prior": prior, "samples": samples})
    for path in (figure, grid):
        with open(path, "rb") as file:
            content = file.read()
        assert content.startswith(PNG_SIGNATURE)
        assert 5_000 < len(content) < 300_000
