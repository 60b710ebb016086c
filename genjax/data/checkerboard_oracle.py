"""The checkerboard diffused by a Gaussian kernel: exact log density and score.

The data set (``genjax.data.toy.checkerboard``, from FFJORD, Grathwohl et al. 2019, "FFJORD:
Free-form Continuous Dynamics for Scalable Reversible Generative Models") is uniform on the 8
"black" squares of a 4 x 4 checkerboard covering [-4, 4]^2. Squares have side 2; the square
with lower-left corner (2i, 2j), i, j in {-2, -1, 0, 1}, is black when i + j is even. The
black area is 32, so p_0 = 1/32 on the black squares and 0 elsewhere, and the entropy is
log 32 nats (log(32) / 2 per dimension).

Every diffusion process here has the transition kernel x_t = alpha x_0 + sigma eps,
eps ~ N(0, I). Because each square is a product of intervals and the kernel is isotropic,
the convolution factorises per square and per coordinate:

    p_t(x) = sum_{S = [a_1, b_1] x [a_2, b_2] black} (1/32)
               prod_{d=1,2} (1/alpha) [Phi((alpha b_d - x_d)/sigma) - Phi((alpha a_d - x_d)/sigma)],

with Phi the standard normal CDF (substitute z = alpha y in int_a^b N(x; alpha y, sigma^2) dy).
So log p_t and its score grad_x log p_t are exact at every t, with no quadrature.

Stable evaluation (float32, points far outside the board, sigma as small as 1e-3):

  * Each factor is log(Phi(u) - Phi(l)) with u > l. If l > 0 both lie in the upper tail
    where Phi(.) ~ 1 and the difference cancels, so reflect: Phi(u) - Phi(l) =
    Phi(-l) - Phi(-u). After the reflection the pair (a, b) has a <= 0 and b > a, and

        log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b))),

    with log Phi = ``jax.scipy.special.log_ndtr`` (accurate deep in the lower tail) and
    log(1 - e^d) = log(-expm1(d)) for d < 0. jax's own derivative of log_ndtr is wrong in
    float32 far in the lower tail (it differentiates an asymptotic series), so log Phi here
    carries a custom JVP, the inverse Mills ratio phi/Phi, itself evaluated by its
    asymptotic series below z = -10. The reflection selects the *inputs* with
    ``jnp.where`` before any log is taken, so no discarded branch can produce inf/NaN
    gradients.
  * Where float32 rounding makes log Phi(a) == log Phi(b) (very narrow intervals deep in a
    tail) the log-diff-exp would be -inf; d is clipped just below 0 and the result is floored
    by the exact lower bound Phi(b) - Phi(a) >= (b - a) min(phi(a), phi(b)), which is tight
    precisely in that regime. Both stay finite, so the score is finite everywhere.
  * The sum over the 8 squares is a logsumexp of the per-square log masses.

The score is the autodiff gradient of that expression; its pieces are finite for any
finite x.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

SQUARE_SIDE = 2.0
BOARD_SQUARES_PER_SIDE = 4
BLACK_AREA = 32.0
CHECKERBOARD_ENTROPY_NATS_PER_DIM = math.log(BLACK_AREA) / 2.0


def _black_square_corners() -> np.ndarray:
    """Lower-left corners (2i, 2j) of the black squares, i, j in {-2, ..., 1}, i + j even
    (the rule of ``toy.checkerboard``), as a read-only float32 array [8, 2]."""
    half = BOARD_SQUARES_PER_SIDE // 2
    corners = [
        (SQUARE_SIDE * i, SQUARE_SIDE * j)
        for i in range(-half, half)
        for j in range(-half, half)
        if (i + j) % 2 == 0
    ]
    array = np.asarray(corners, dtype=np.float32)
    array.setflags(write=False)
    return array


BLACK_SQUARES: np.ndarray = _black_square_corners()  # [8, 2], read-only
"""Lower-left corners of the 8 black squares; square k is BLACK_SQUARES[k] + [0, 2]^2."""

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)
_TINY_LOG_GAP = 1e-30  # keeps log(-expm1(d)) finite when float32 rounds d to 0
_MILLS_TAIL = -10.0  # below this the inverse Mills ratio uses its asymptotic series


def _inverse_mills_ratio(z: jax.Array) -> jax.Array:
    """phi(z) / Phi(z), the derivative of log Phi(z), accurate for every finite float32 z.

    For z >= -10 it is exp(log phi(z) - log Phi(z)). Below, both logs are ~ -z^2/2 and their
    float32 difference loses all digits, so the asymptotic series
    Phi(z) = phi(z)/(-z) (1 - z^-2 + 3 z^-4 - 15 z^-6 + ...) is used instead (next term
    105 z^-8 <= 1e-6 relative). Inputs are split by ``jnp.where`` before either branch runs
    ("double where"), so neither branch sees values where it overflows.
    """
    in_tail = z < _MILLS_TAIL
    z_tail = jnp.where(in_tail, z, _MILLS_TAIL)
    z_body = jnp.where(in_tail, _MILLS_TAIL, z)
    inv_sq = 1.0 / (z_tail * z_tail)
    tail = -z_tail / (1.0 - inv_sq * (1.0 - inv_sq * (3.0 - 15.0 * inv_sq)))
    body = jnp.exp(-0.5 * z_body * z_body - _HALF_LOG_TWO_PI - jax.scipy.special.log_ndtr(z_body))
    return jnp.where(in_tail, tail, body)


@jax.custom_jvp
def log_ndtr(z: jax.Array) -> jax.Array:
    """log Phi(z) (``jax.scipy.special.log_ndtr``) with an exact derivative phi(z)/Phi(z).

    jax differentiates log_ndtr through its asymptotic series, which in float32 goes wrong
    far in the lower tail (d/dz log Phi at z = -1e4 comes out ~ 3e3 instead of ~ 1e4, and
    1.0 at z = -5.6e4); the custom JVP uses ``_inverse_mills_ratio`` instead.
    """
    return jax.scipy.special.log_ndtr(z)


@log_ndtr.defjvp
def _log_ndtr_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    return log_ndtr(z), _inverse_mills_ratio(z) * dz


def log_normal_interval_mass(
    lower: jax.Array, upper: jax.Array, log_width: jax.Array | None = None
) -> jax.Array:
    """log(Phi(upper) - Phi(lower)) elementwise for upper > lower, stable in both tails.

    Reflects to (a, b) = (-upper, -lower) when lower > 0, so a <= 0, then evaluates
    log Phi(b) + log(-expm1(log Phi(a) - log Phi(b))), floored by the exact lower bound
    log(b - a) + min(log phi(a), log phi(b)) (see the module docstring). Pass log_width =
    log(upper - lower) when it is known exactly: float32 may round upper - lower to 0 far out,
    and log(0) would poison the gradient of the floor.
    """
    reflect = lower > 0.0
    a = jnp.where(reflect, -upper, lower)
    b = jnp.where(reflect, -lower, upper)
    log_cdf_a = log_ndtr(a)
    log_cdf_b = log_ndtr(b)
    gap = jnp.minimum(log_cdf_a - log_cdf_b, -_TINY_LOG_GAP)
    direct = log_cdf_b + jnp.log(-jnp.expm1(gap))
    # phi is unimodal, so its minimum over [a, b] is at the endpoint farther from 0.
    log_min_density = -0.5 * jnp.maximum(a * a, b * b) - _HALF_LOG_TWO_PI
    if log_width is None:
        log_width = jnp.log(upper - lower)
    floor = log_width + log_min_density
    return jnp.maximum(direct, floor)


def checkerboard_log_prob(x: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """log p_t(x) of the checkerboard diffused by x_t = alpha x_0 + sigma eps, for one point x [2].

        log p_t(x) = logsumexp_S sum_d log(Phi((alpha b_d - x_d)/sigma) - Phi((alpha a_d - x_d)/sigma))
                     - log 32 - 2 log alpha,

    S running over the black squares [a_1, b_1] x [a_2, b_2]; alpha, sigma > 0 scalars.
    """
    x = jnp.asarray(x)
    alpha = jnp.asarray(alpha, x.dtype)
    sigma = jnp.asarray(sigma, x.dtype)
    corners = jnp.asarray(BLACK_SQUARES, x.dtype)  # [8, 2]
    lower = (alpha * corners - x) / sigma  # [8, 2]
    upper = (alpha * (corners + SQUARE_SIDE) - x) / sigma
    log_width = jnp.log(alpha * SQUARE_SIDE / sigma)
    log_mass = jnp.sum(log_normal_interval_mass(lower, upper, log_width), axis=-1)  # [8]
    dim = x.shape[-1]
    return jax.scipy.special.logsumexp(log_mass) - jnp.log(BLACK_AREA) - dim * jnp.log(alpha)


def checkerboard_score(x: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """grad_x log p_t(x) for one point x [2] (autodiff of ``checkerboard_log_prob``)."""
    return jax.grad(checkerboard_log_prob)(x, alpha, sigma)


def perturbed_checkerboard_score_fn(process) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The exact score of the checkerboard diffused by `process`, per example
    (x [2], t []) -> [2], with (alpha, sigma) = process.marginal_coefficients(t)."""

    def score(x: jax.Array, t: jax.Array) -> jax.Array:
        alpha, sigma = process.marginal_coefficients(t)
        return checkerboard_score(x, alpha, sigma)

    return score


def perturbed_checkerboard_log_prob_fn(process) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The exact log p_t(x) of the diffused checkerboard, per example (x [2], t []) -> []."""

    def log_prob(x: jax.Array, t: jax.Array) -> jax.Array:
        alpha, sigma = process.marginal_coefficients(t)
        return checkerboard_log_prob(x, alpha, sigma)

    return log_prob
