"""Transition kernels and the Chapman-Kolmogorov equation.

A time-homogeneous Markov process has transition kernels P_t(x, dy) that compose
(Chapman-Kolmogorov; Oksendal, sec. 7.1; Feller vol. 1, ch. XV):

    P_{s+t}(x, A) = int P_s(x, dz) P_t(z, A).

- Simple random walk: P_n(x, x + k) = C(n, (n + k)/2) / 2^n for k = -n, -n+2, ..., n.
  In path counts N_n(k) = C(n, (n + k)/2) the composition is a convolution, and
  N_m * N_n = N_{m+n} holds exactly in integers (Vandermonde's identity).
- Brownian motion: p_t(y | x) = N(y; x, t); Gaussian kernels compose as
  N(0, s) * N(0, t) = N(0, s + t). The Ornstein-Uhlenbeck kernel (models.OrnsteinUhlenbeck)
  composes the same way. Numerically the integral is a quadrature on a grid,
  (P_s P_t)_{ij} = sum_k P_s(x_i, x_k) P_t(x_k, x_j), with P(x, y) = p(y | x) h.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def _pascal(num_steps: int, dtype, weight) -> jax.Array:
    """Iterate K_{n+1}(k) = weight (K_n(k - 1) + K_n(k + 1)) from K_0 = delta_0 over k = -n..n."""
    kernel = jnp.zeros(2 * num_steps + 1, dtype).at[num_steps].set(1)
    step = lambda _, c: weight * (jnp.roll(c, 1).at[0].set(0) + jnp.roll(c, -1).at[-1].set(0))
    return jax.lax.fori_loop(0, num_steps, step, kernel)


def random_walk_path_counts(num_steps: int) -> jax.Array:
    """N_n(k) = number of n-step +-1 paths from 0 to k, for k = -n..n (zero when k and n differ in
    parity), int32 [2n + 1]; exact for n <= 33 (C(33, 16) < 2^31). Pascal's rule:
    N_{n+1}(k) = N_n(k - 1) + N_n(k + 1)."""
    return _pascal(num_steps, jnp.int32, 1)


def random_walk_kernel(num_steps: int) -> jax.Array:
    """P_n(0, k) = C(n, (n + k)/2) / 2^n for k = -n..n (zero for the wrong parity), float32 [2n + 1],
    by the same recursion halved, P_{n+1}(k) = (P_n(k - 1) + P_n(k + 1)) / 2: relative rounding
    error at most about n float32 epsilons, for any n."""
    return _pascal(num_steps, jnp.float32, 0.5)


def compose_kernels(kernel_s: jax.Array, kernel_t: jax.Array) -> jax.Array:
    """Chapman-Kolmogorov for a space-homogeneous kernel on Z: (K_s * K_t)(k) = sum_j K_s(j) K_t(k - j).
    Kernels are indexed by displacement -n..n; the result covers -(m+n)..(m+n). Integer inputs
    give an exact integer result."""
    m, n = kernel_s.shape[0], kernel_t.shape[0]
    out = jnp.arange(m + n - 1)[:, None] - jnp.arange(n)[None, :]  # index into kernel_s
    valid = (out >= 0) & (out < m)
    terms = jnp.where(valid, kernel_s[jnp.clip(out, 0, m - 1)] * kernel_t[None, :], 0)
    return jnp.sum(terms, axis=1)


def gaussian_transition_density(y: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
    """Brownian transition density p_t(y | x) = exp(-(y - x)^2 / (2t)) / sqrt(2 pi t)."""
    return jnp.exp(-0.5 * (y - x) ** 2 / t) / jnp.sqrt(2.0 * jnp.pi * t)


def transition_matrix(density: Callable[[jax.Array, jax.Array], jax.Array], points: jax.Array) -> jax.Array:
    """P_{ij} = p(x_j | x_i) h on equally spaced 1-D points (h their spacing): a row-stochastic
    matrix up to the mass that falls outside the grid. density(y, x) is the transition density."""
    spacing = points[1] - points[0]
    return density(points[None, :], points[:, None]) * spacing


def chapman_kolmogorov_defect(
    matrix_s: jax.Array, matrix_t: jax.Array, matrix_s_plus_t: jax.Array, points: jax.Array, interior: jax.Array
) -> jax.Array:
    """max_{i in interior, j} |(P_s P_t)_{ij} - (P_{s+t})_{ij}| / h: the largest error, in density
    units, of the composed kernel. `interior` masks start points far enough from the grid's
    ends that the mass leaving the grid is negligible."""
    spacing = points[1] - points[0]
    defect = jnp.abs(matrix_s @ matrix_t - matrix_s_plus_t) / spacing
    return jnp.max(jnp.where(interior[:, None], defect, 0.0))
