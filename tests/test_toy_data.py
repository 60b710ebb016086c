"""The toy generators: determinism, scale, and each set's defining structure.

Structure checks recover the generating geometry from the points (which square, which
centre, which ring, where on a spiral) so a wrong generator fails them. Counts are compared
with their binomial expectation within 4 standard deviations; all keys are fixed, so the
tests are deterministic.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from genjax.data import toy

GENERATORS = [
    toy.checkerboard,
    toy.eight_gaussians,
    toy.two_moons,
    toy.swiss_roll,
    toy.concentric_rings,
    toy.pinwheel,
    toy.two_spirals,
    toy.gaussian_mixture,
]
NUM = 8000


def _draw(generator, seed: int = 0, num: int = NUM) -> np.ndarray:
    return np.asarray(jax.jit(generator, static_argnums=1)(jax.random.key(seed), num), dtype=np.float64)


def _assert_counts_match(counts: np.ndarray, probabilities: np.ndarray, sigmas: float = 4.0) -> None:
    """Each count is within `sigmas` binomial standard deviations of its expectation."""
    total = counts.sum()
    expected = total * probabilities
    std = np.sqrt(total * probabilities * (1.0 - probabilities))
    assert np.all(np.abs(counts - expected) <= sigmas * std), (counts, expected)


def _wrap(angle, period: float = 2.0 * math.pi):
    """angle mapped into [-period / 2, period / 2)."""
    return (angle + 0.5 * period) % period - 0.5 * period


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.__name__)
def test_shape_dtype_determinism_and_scale(generator):
    compiled = jax.jit(generator, static_argnums=1)
    first = compiled(jax.random.key(0), NUM)
    again = compiled(jax.random.key(0), NUM)
    other = compiled(jax.random.key(1), NUM)
    assert first.shape == (NUM, 2) and first.dtype == jnp.float32
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.allclose(np.asarray(first), np.asarray(other))

    points = np.asarray(first, dtype=np.float64)
    assert np.all(np.isfinite(points))
    # The shared FFJORD scale: essentially everything within [-4, 4], nothing far outside,
    # centred within a unit and a spread of a few units in each coordinate.
    assert np.mean(np.all(np.abs(points) <= 4.0, axis=1)) >= 0.995
    assert np.max(np.abs(points)) <= 6.0
    assert np.all(np.abs(points.mean(axis=0)) <= 1.0)
    assert np.all((points.std(axis=0) >= 0.7) & (points.std(axis=0) <= 2.5))


def test_raw_uint32_keys_give_the_same_points_as_typed_keys():
    compiled = jax.jit(toy.pinwheel, static_argnums=1)
    raw = compiled(jax.random.PRNGKey(3), 64)
    typed = compiled(jax.random.wrap_key_data(jax.random.PRNGKey(3)), 64)
    assert np.array_equal(np.asarray(raw), np.asarray(typed))


def test_checkerboard_points_lie_on_black_squares_equally():
    points = _draw(toy.checkerboard)
    assert np.all(np.abs(points) <= 4.0)
    cell = np.floor(points / 2.0).astype(int)  # lower-left corner / 2, each in {-2, ..., 1}
    assert np.all((cell.sum(axis=1) % 2) == 0), "a point fell on a white square"
    black = [(i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0]
    counts = np.array([np.sum((cell[:, 0] == i) & (cell[:, 1] == j)) for i, j in black])
    _assert_counts_match(counts, np.full(8, 1 / 8))
    # Uniform inside a square: the offset from the corner has mean 1 and variance 4/12.
    offset = points - 2.0 * cell
    np.testing.assert_allclose(offset.mean(axis=0), 1.0, atol=4 * math.sqrt(4 / 12 / len(points)))


def test_eight_gaussians_has_eight_equal_clusters_with_the_right_spread():
    points = _draw(toy.eight_gaussians)
    angles = np.arange(8) * math.pi / 4
    centres = toy.EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    nearest = np.argmin(np.linalg.norm(points[:, None, :] - centres[None], axis=-1), axis=1)
    _assert_counts_match(np.bincount(nearest, minlength=8), np.full(8, 1 / 8))
    residual = points - centres[nearest]
    # Clusters barely overlap (centres 2.17 apart, std 0.35), so the residuals are ~N(0, 0.35^2 I).
    np.testing.assert_allclose(residual.std(axis=0), toy.EIGHT_GAUSSIANS_STD, rtol=0.05)
    np.testing.assert_allclose(residual.mean(axis=0), 0.0, atol=0.02)


def _distance_to_arc(points, centre, start, stop):
    """Distance from points [N, 2] to the unit-circle arc around centre spanning polar
    angles [start, stop] (stop - start < 2 pi)."""
    relative = points - np.asarray(centre)
    angle = np.arctan2(relative[:, 1], relative[:, 0])
    on_arc = _wrap(angle - 0.5 * (start + stop)) <= 0.5 * (stop - start)
    on_arc &= _wrap(angle - 0.5 * (start + stop)) >= -0.5 * (stop - start)
    radial = np.abs(np.linalg.norm(relative, axis=1) - 1.0)
    ends = np.stack([np.asarray(centre) + [np.cos(a), np.sin(a)] for a in (start, stop)])
    to_ends = np.min(np.linalg.norm(points[:, None, :] - ends[None], axis=-1), axis=1)
    return np.where(on_arc, radial, to_ends)


def test_two_moons_are_two_equal_half_circles():
    points = _draw(toy.two_moons)
    unscaled = (points - np.asarray(toy.TWO_MOONS_SHIFT)) / toy.TWO_MOONS_SCALE
    upper = _distance_to_arc(unscaled, (0.0, 0.0), 0.0, math.pi)
    lower = _distance_to_arc(unscaled, (1.0, 0.5), math.pi, 2.0 * math.pi)
    distance = np.minimum(upper, lower)
    # The noise is N(0, 0.1^2) per coordinate: 3.5 sigma covers all but ~0.2 %.
    assert np.mean(distance <= 0.35) >= 0.99
    assert np.median(distance) <= 0.1
    is_lower = lower < upper
    _assert_counts_match(np.bincount(is_lower.astype(int), minlength=2), np.full(2, 0.5))
    # Positions along each moon are uniform in the angle: thirds of the arc get a third each.
    for moon, centre, start in ((~is_lower, (0.0, 0.0), 0.0), (is_lower, (1.0, 0.5), math.pi)):
        relative = unscaled[moon] - np.asarray(centre)
        position = (np.arctan2(relative[:, 1], relative[:, 0]) - start) % (2 * math.pi)
        interior = position <= math.pi  # the rest are noise beyond the arc's ends
        thirds = np.clip(np.floor(position[interior] / (math.pi / 3)), 0, 2).astype(int)
        _assert_counts_match(np.bincount(thirds, minlength=3), np.full(3, 1 / 3), sigmas=5.0)


def test_swiss_roll_follows_the_spiral_r_equals_t():
    points = _draw(toy.swiss_roll) / toy.SWISS_ROLL_SCALE
    radius = np.linalg.norm(points, axis=1)
    angle = np.arctan2(points[:, 1], points[:, 0])
    # On the noiseless roll, (t cos t, t sin t) has radius t and polar angle t (mod 2 pi).
    residual = _wrap(radius - angle)
    # With N(0, 1) noise |residual| < 2 for ~94 %; a wrong spiral (uniform residual) gives 64 %.
    assert np.mean(np.abs(residual) < 2.0) >= 0.88
    # t = 3 pi / 2 (1 + 2u) spans [4.71, 14.14]: radii stay in that range up to the noise.
    assert np.mean((radius > 1.5 * math.pi - 3) & (radius < 4.5 * math.pi + 3)) >= 0.995
    assert abs(np.median(radius) - 3 * math.pi) < 0.3  # the median of t


def test_concentric_rings_radii_concentrate_on_the_four_rings():
    points = _draw(toy.concentric_rings)
    radius = np.linalg.norm(points, axis=1)
    radii = np.asarray(toy.RING_RADII)
    nearest = np.argmin(np.abs(radius[:, None] - radii[None]), axis=1)
    deviation = radius - radii[nearest]
    # Radial noise ~ N(0, 0.08^2); the rings are >= 0.6 apart.
    assert np.mean(np.abs(deviation) <= 3.5 * toy.RING_NOISE) >= 0.99
    np.testing.assert_allclose(np.std(deviation), toy.RING_NOISE, rtol=0.1)
    _assert_counts_match(np.bincount(nearest, minlength=4), np.full(4, 1 / 4))
    # Uniform angle: each quadrant gets a quarter.
    quadrant = (np.arctan2(points[:, 1], points[:, 0]) // (math.pi / 2)).astype(int) % 4
    _assert_counts_match(np.bincount(quadrant, minlength=4), np.full(4, 1 / 4))


def test_pinwheel_arms_bend_by_the_exponential_rate():
    points = _draw(toy.pinwheel) / toy.PINWHEEL_SCALE
    radial_feature = np.linalg.norm(points, axis=1)  # |f| ~ f_1, as f_2 is small
    angle = np.arctan2(points[:, 1], points[:, 0])
    # A point at angle 2 pi k / 5 + rate exp(f_1) + atan(f_2 / f_1): undo the bend and the
    # residual modulo the arm spacing is the small tangential angle (std ~ 0.1).
    spacing = 2 * math.pi / toy.PINWHEEL_ARMS
    unbent = angle - toy.PINWHEEL_RATE * np.exp(radial_feature)
    residual = _wrap(unbent, spacing)
    assert np.mean(np.abs(residual) < 0.3) >= 0.95  # uniform residuals would give ~48 %
    arm = np.round((unbent - residual) / spacing).astype(int) % toy.PINWHEEL_ARMS
    _assert_counts_match(np.bincount(arm, minlength=toy.PINWHEEL_ARMS), np.full(toy.PINWHEEL_ARMS, 1 / 5))
    # The radial feature is 1 + 0.3 z.
    assert abs(np.median(radial_feature) - 1.0) < 0.03


def test_two_spirals_are_two_reflected_arms():
    points = _draw(toy.two_spirals)
    theta = np.linalg.norm(points, axis=1) / toy.TWO_SPIRALS_SCALE
    angle = np.arctan2(points[:, 1], points[:, 0])
    # Arm one, theta (-cos theta, sin theta), has polar angle pi - theta; arm two is its
    # reflection, polar angle -theta. So angle + theta is pi (arm one) or 0 (arm two) mod 2 pi.
    outer = theta > 3.0  # near the centre the noise swamps the angle
    phase = _wrap(angle[outer] + theta[outer])
    residual = _wrap(phase, math.pi)
    # Radial noise of 0.1 / scale = 0.3 plus the jitter give the residual a std of ~0.4;
    # uniform residuals on [-pi/2, pi/2] would give 64 % below 1 and a median of pi/4.
    assert np.mean(np.abs(residual) < 1.0) >= 0.95
    assert np.median(np.abs(residual)) < 0.4
    is_arm_one = np.abs(phase) > math.pi / 2
    _assert_counts_match(np.bincount(is_arm_one.astype(int), minlength=2), np.full(2, 0.5))
    # theta = 3 pi sqrt(u): P(theta <= 9 pi / 4) = (3/4)^2. (At theta = 9 pi / 4 the arm runs
    # perpendicular to the mean (1, 1) / 4 of the uncentred jitter, which leaves radii unbiased.)
    below = theta <= 2.25 * math.pi
    _assert_counts_match(np.bincount(below.astype(int), minlength=2), np.array([7 / 16, 9 / 16]))


def test_gaussian_mixture_oracle_is_a_valid_anisotropic_mixture():
    oracle = toy.gaussian_mixture_oracle()
    weights = np.asarray(oracle.weights)
    covariances = np.asarray(oracle.covariances)
    assert oracle.dim == 2 and len(weights) >= 3
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
    assert len(set(np.round(weights, 6))) == len(weights), "weights should differ"
    eigenvalues = np.linalg.eigvalsh(covariances)
    assert np.all(eigenvalues > 0)
    assert np.all(eigenvalues[:, 1] / eigenvalues[:, 0] > 2.0), "components should be anisotropic"
    assert np.any(np.abs(covariances[:, 0, 1]) > 0.1), "some covariance should be non-diagonal"
    means = np.asarray(oracle.means)
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(len(means), 1)]
    assert gaps.min() > 4.0 * np.sqrt(eigenvalues.max()), "components should be well separated"


def test_gaussian_mixture_samples_match_the_closed_form_moments_and_density():
    oracle = toy.gaussian_mixture_oracle()
    num = 20000
    points = _draw(toy.gaussian_mixture, num=num)
    mean = np.asarray(oracle.mean(), np.float64)
    covariance = np.asarray(oracle.covariance(), np.float64)

    # Sample mean: standard error sqrt(Sigma_ii / n).
    standard_error = np.sqrt(np.diag(covariance) / num)
    assert np.all(np.abs(points.mean(axis=0) - mean) <= 4 * standard_error)

    # Sample covariance: entry (i, j) is the mean of c_ij = (x_i - m_i)(x_j - m_j), whose
    # standard error is estimated from the spread of c_ij itself.
    centred = points - mean
    products = centred[:, :, None] * centred[:, None, :]
    products_error = products.std(axis=0) / math.sqrt(num)
    assert np.all(np.abs(products.mean(axis=0) - covariance) <= 4 * products_error)

    # Average log-likelihood of the samples against the negative entropy int p log p,
    # computed independently by quadrature on a fine grid (which also checks normalisation).
    # One evaluation of the per-component log densities serves samples and grid alike.
    grid = np.linspace(-9.0, 9.0, 481)
    cell = (grid[1] - grid[0]) ** 2
    mesh = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    component_log_probs = jax.jit(jax.vmap(oracle.component_log_probs))
    all_components = np.asarray(component_log_probs(jnp.asarray(np.concatenate([points, mesh]), jnp.float32)))
    all_log_probs = scipy.special.logsumexp(all_components.astype(np.float64), axis=1)
    sample_log_probs, grid_log_probs = all_log_probs[:num], all_log_probs[num:]
    density = np.exp(grid_log_probs)
    np.testing.assert_allclose(density.sum() * cell, 1.0, atol=2e-3)
    negative_entropy = np.sum(density * grid_log_probs) * cell
    log_likelihood_error = sample_log_probs.std() / math.sqrt(num)
    assert abs(sample_log_probs.mean() - negative_entropy) <= 4 * log_likelihood_error + 5e-3

    # Component frequencies (by largest responsibility; the components barely overlap).
    component = np.argmax(all_components[:num], axis=1)
    weights = np.asarray(oracle.weights, np.float64)
    _assert_counts_match(np.bincount(component, minlength=len(weights)), weights)
