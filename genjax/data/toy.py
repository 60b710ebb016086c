"""Two-dimensional toy distributions, drawn from a jax key.

Every generator has the signature ``name(key, num) -> [num, 2] float32`` and is pure jax, so
the same key gives the same points on any device, and ``jax.jit(name, static_argnums=1)``
compiles it. Each point is an independent draw (components, arms and rings are chosen at
random per point, not in fixed blocks), so any prefix of a batch is itself a sample.

The sets and their scales follow the toy suite of FFJORD (Grathwohl et al. 2019, "FFJORD:
Free-form Continuous Dynamics for Scalable Reversible Generative Models"): coordinates lie
within about [-4, 4] and the spread is a few units, so one network configuration fits all.
``pinwheel`` comes from Johnson et al. 2016 ("Composing graphical models with neural networks
for structured representations and fast inference"); ``two_moons`` and ``swiss_roll`` are the
scikit-learn generators as FFJORD rescales them. ``gaussian_mixture`` draws from a fixed
mixture whose density is known exactly (``gaussian_mixture_oracle``).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from genjax.data.gaussian_mixture import GaussianMixture

_DTYPE = jnp.float32


def _rotate(points: jax.Array, angles: jax.Array) -> jax.Array:
    """Rotate each row of points [N, 2] counter-clockwise by its angle [N]."""
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x, y = points[:, 0], points[:, 1]
    return jnp.stack([cos * x - sin * y, sin * x + cos * y], axis=-1)


def checkerboard(key: jax.Array, num: int) -> jax.Array:
    """Uniform on the 8 "black" squares of a 4 x 4 checkerboard covering [-4, 4]^2 (FFJORD).

    Squares have side 2; the square with lower-left corner (2i, 2j), i, j in {-2, ..., 1}, is
    black when i + j is even. A point picks its column i uniformly, one of the column's two
    black rows uniformly, and then a uniform position inside that square.
    """
    key_column, key_row, key_offset = jax.random.split(key, 3)
    column = jax.random.randint(key_column, (num,), -2, 2)
    # In column i the black rows are j = (i mod 2) - 2 and j = i mod 2.
    row = jnp.mod(column, 2) - 2 + 2 * jax.random.randint(key_row, (num,), 0, 2)
    corner = jnp.stack([column, row], axis=-1).astype(_DTYPE)
    offset = jax.random.uniform(key_offset, (num, 2), dtype=_DTYPE)
    return 2.0 * (corner + offset)


EIGHT_GAUSSIANS_RADIUS = 4.0 / math.sqrt(2.0)
EIGHT_GAUSSIANS_STD = 0.5 / math.sqrt(2.0)


def eight_gaussians(key: jax.Array, num: int) -> jax.Array:
    """Equal-weight mixture of 8 isotropic Gaussians on a circle (FFJORD "8gaussians").

    Centres r (cos(k pi / 4), sin(k pi / 4)), k = 0..7, with r = 4 / sqrt(2) ~ 2.83 and
    standard deviation 0.5 / sqrt(2) ~ 0.35 per coordinate.
    """
    key_component, key_noise = jax.random.split(key)
    angle = jax.random.randint(key_component, (num,), 0, 8).astype(_DTYPE) * (jnp.pi / 4.0)
    centre = EIGHT_GAUSSIANS_RADIUS * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return centre + EIGHT_GAUSSIANS_STD * jax.random.normal(key_noise, (num, 2), dtype=_DTYPE)


TWO_MOONS_NOISE = 0.1
TWO_MOONS_SCALE = 2.0
TWO_MOONS_SHIFT = (-1.0, -0.2)


def two_moons(key: jax.Array, num: int) -> jax.Array:
    """Two interleaved half circles (scikit-learn ``make_moons``, rescaled as in FFJORD).

    Before rescaling, with s ~ U[0, pi] and a fair coin per point, the upper moon is
    (cos s, sin s) and the lower moon (1 - cos s, 1/2 - sin s); both get N(0, 0.1^2)
    noise per coordinate. The result is then mapped by p -> 2 p + (-1, -0.2).
    """
    key_moon, key_position, key_noise = jax.random.split(key, 3)
    lower = jax.random.bernoulli(key_moon, 0.5, (num,))
    s = jax.random.uniform(key_position, (num,), dtype=_DTYPE, maxval=jnp.pi)
    upper_moon = jnp.stack([jnp.cos(s), jnp.sin(s)], axis=-1)
    lower_moon = jnp.stack([1.0 - jnp.cos(s), 0.5 - jnp.sin(s)], axis=-1)
    points = jnp.where(lower[:, None], lower_moon, upper_moon)
    points = points + TWO_MOONS_NOISE * jax.random.normal(key_noise, (num, 2), dtype=_DTYPE)
    return TWO_MOONS_SCALE * points + jnp.asarray(TWO_MOONS_SHIFT, _DTYPE)


SWISS_ROLL_NOISE = 1.0
SWISS_ROLL_SCALE = 1.0 / 5.0


def swiss_roll(key: jax.Array, num: int) -> jax.Array:
    """The 2-D Swiss roll: an Archimedean spiral r = t (scikit-learn ``make_swiss_roll``
    projected to its first and third coordinates, divided by 5 as in FFJORD).

    t = 3 pi / 2 (1 + 2 u), u ~ U[0, 1], and the point is (t cos t + e_1, t sin t + e_2) / 5
    with e ~ N(0, I), so radii run from about 0.94 to 2.83 over one and a half turns.
    """
    key_position, key_noise = jax.random.split(key)
    t = 1.5 * jnp.pi * (1.0 + 2.0 * jax.random.uniform(key_position, (num,), dtype=_DTYPE))
    spiral = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=-1)
    noise = SWISS_ROLL_NOISE * jax.random.normal(key_noise, (num, 2), dtype=_DTYPE)
    return SWISS_ROLL_SCALE * (spiral + noise)


RING_RADII = (0.75, 1.65, 2.4, 3.0)
RING_NOISE = 0.08


def concentric_rings(key: jax.Array, num: int) -> jax.Array:
    """Four concentric circles of radii 0.75, 1.65, 2.4 and 3 (FFJORD "rings").

    Each point picks a ring uniformly and a uniform angle on it, plus N(0, 0.08^2) noise per
    coordinate.
    """
    key_ring, key_angle, key_noise = jax.random.split(key, 3)
    radius = jnp.asarray(RING_RADII, _DTYPE)[jax.random.randint(key_ring, (num,), 0, len(RING_RADII))]
    angle = jax.random.uniform(key_angle, (num,), dtype=_DTYPE, maxval=2.0 * jnp.pi)
    circle = radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return circle + RING_NOISE * jax.random.normal(key_noise, (num, 2), dtype=_DTYPE)


PINWHEEL_ARMS = 5
PINWHEEL_RADIAL_STD = 0.3
PINWHEEL_TANGENTIAL_STD = 0.1
PINWHEEL_RATE = 0.25
PINWHEEL_SCALE = 2.0


def pinwheel(key: jax.Array, num: int) -> jax.Array:
    """Five curved arms (Johnson et al. 2016; FFJORD's parameters).

    A point picks an arm k uniformly and draws f = (1 + 0.3 z_1, 0.1 z_2), z ~ N(0, I); it
    is f rotated counter-clockwise by 2 pi k / 5 + 0.25 exp(f_1) and scaled by 2. Farther
    points are rotated more, which bends each Gaussian blob into a spiral arm.
    """
    key_arm, key_feature = jax.random.split(key)
    arm = jax.random.randint(key_arm, (num,), 0, PINWHEEL_ARMS).astype(_DTYPE)
    feature = jax.random.normal(key_feature, (num, 2), dtype=_DTYPE)
    feature = feature * jnp.asarray([PINWHEEL_RADIAL_STD, PINWHEEL_TANGENTIAL_STD], _DTYPE)
    feature = feature.at[:, 0].add(1.0)
    angle = 2.0 * jnp.pi * arm / PINWHEEL_ARMS + PINWHEEL_RATE * jnp.exp(feature[:, 0])
    return PINWHEEL_SCALE * _rotate(feature, angle)


TWO_SPIRALS_TURN = 3.0 * math.pi  # 540 degrees
TWO_SPIRALS_JITTER = 0.5
TWO_SPIRALS_SCALE = 1.0 / 3.0
TWO_SPIRALS_NOISE = 0.1


def two_spirals(key: jax.Array, num: int) -> jax.Array:
    """Two interleaved spiral arms, each the other's reflection through the origin (FFJORD
    "2spirals").

    theta = 3 pi sqrt(u), u ~ U[0, 1] (so points are uniform along the arm's area, denser
    outwards); the first arm is a = (-theta cos theta + j_1, theta sin theta + j_2) with
    j ~ U[0, 0.5]^2, the second is -a (a fair coin per point). The point is a / 3 plus
    N(0, 0.1^2) noise. The uniform jitter is not centred, exactly as in FFJORD; it shifts
    the arms by about 0.08 in opposite directions.
    """
    key_arm, key_position, key_jitter, key_noise = jax.random.split(key, 4)
    sign = jnp.where(jax.random.bernoulli(key_arm, 0.5, (num,)), -1.0, 1.0).astype(_DTYPE)
    theta = TWO_SPIRALS_TURN * jnp.sqrt(jax.random.uniform(key_position, (num,), dtype=_DTYPE))
    arm = jnp.stack([-theta * jnp.cos(theta), theta * jnp.sin(theta)], axis=-1)
    arm = arm + TWO_SPIRALS_JITTER * jax.random.uniform(key_jitter, (num, 2), dtype=_DTYPE)
    noise = TWO_SPIRALS_NOISE * jax.random.normal(key_noise, (num, 2), dtype=_DTYPE)
    return TWO_SPIRALS_SCALE * sign[:, None] * arm + noise


def gaussian_mixture_oracle() -> GaussianMixture:
    """The fixed 2-D mixture behind ``gaussian_mixture``, density and score exact.

    Three well separated components (centres about 4 apart, standard deviations below 0.9)
    with unequal weights 0.5, 0.3, 0.2 and full, anisotropic covariances:

        w = 0.5, mu = (-2, -1),   Sigma = [[0.50,  0.30], [ 0.30, 0.30]]   (tilted up)
        w = 0.3, mu = ( 2, -1.5), Sigma = [[0.20, -0.15], [-0.15, 0.40]]   (tilted down)
        w = 0.2, mu = ( 0,  2.5), Sigma = [[0.60,  0.05], [ 0.05, 0.10]]   (flat)
    """
    return GaussianMixture(
        weights=jnp.asarray([0.5, 0.3, 0.2], _DTYPE),
        means=jnp.asarray([[-2.0, -1.0], [2.0, -1.5], [0.0, 2.5]], _DTYPE),
        covariances=jnp.asarray(
            [
                [[0.50, 0.30], [0.30, 0.30]],
                [[0.20, -0.15], [-0.15, 0.40]],
                [[0.60, 0.05], [0.05, 0.10]],
            ],
            _DTYPE,
        ),
    )


def gaussian_mixture(key: jax.Array, num: int) -> jax.Array:
    """Draws from ``gaussian_mixture_oracle()``, the toy set whose density is known exactly."""
    return gaussian_mixture_oracle().sample(key, num)
