"""A conservative finite-volume solver for the Fokker-Planck (forward Kolmogorov) equation.

For dX = a(X) dt + sigma dW in R^d with constant diagonal noise, the density p(x, t) solves
(Risken, "The Fokker-Planck Equation", 2nd ed., ch. 4)

    dp/dt = -div J,     J_k = a_k p - D_k dp/dx_k,     D_k = sigma_k^2 / 2.

Cells of a tensor-product grid hold cell averages p_i; the flux through each interior face
uses the Scharfetter-Gummel (exponential-fitting) formula (Scharfetter & Gummel 1969;
Chang & Cooper 1970 is the same idea), with the drift taken at the face,

    J_{i+1/2} = (D / h) [ B(-Pe) p_i - B(Pe) p_{i+1} ],    Pe = a_{i+1/2} h / D,   B(z) = z / (e^z - 1),

which is exact for constant flux, reduces to central differences as Pe -> 0 and to upwinding
as |Pe| -> infinity. Boundary faces carry zero flux. Because each face flux leaves one cell
and enters its neighbour, total mass sum_i p_i |cell| is conserved to rounding; B > 0 makes
the semi-discrete operator an M-matrix, so forward-Euler steps with dt <= 1 / (max outflow
rate) keep p non-negative. The discrete stationary state satisfies p_{i+1}/p_i = e^{Pe},
i.e. the Gibbs density exp(-2 U / sigma^2) for a gradient drift a = -U'.
Everything is time-homogeneous: the drift is evaluated once, at t = 0.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Grid:
    """A tensor-product grid of num_cells[k] equal cells on [lower[k], upper[k]] per axis."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    num_cells: tuple[int, ...]

    @property
    def dim(self) -> int:
        return len(self.num_cells)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple((u - l) / n for l, u, n in zip(self.lower, self.upper, self.num_cells))

    @property
    def cell_volume(self) -> float:
        volume = 1.0
        for h in self.spacing:
            volume *= h
        return volume

    def centers(self, axis: int) -> jax.Array:
        """Cell centres along one axis, shape [num_cells[axis]]."""
        h = self.spacing[axis]
        return self.lower[axis] + h * (jnp.arange(self.num_cells[axis]) + 0.5)

    def edges(self, axis: int) -> jax.Array:
        """All cell faces along one axis (boundaries included), shape [num_cells[axis] + 1]."""
        return jnp.linspace(self.lower[axis], self.upper[axis], self.num_cells[axis] + 1)

    def points(self) -> jax.Array:
        """Cell centres as points, shape [*num_cells, dim]."""
        return jnp.stack(jnp.meshgrid(*[self.centers(k) for k in range(self.dim)], indexing="ij"), axis=-1)

    def face_points(self, axis: int) -> jax.Array:
        """Centres of the interior faces normal to `axis`, shape num_cells with num_cells[axis] - 1."""
        axes = [self.centers(k) for k in range(self.dim)]
        axes[axis] = self.edges(axis)[1:-1]
        return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)


def bernoulli_function(z: jax.Array) -> jax.Array:
    """B(z) = z / (e^z - 1), with B(0) = 1 (Taylor series 1 - z/2 + z^2/12 near 0)."""
    small = jnp.abs(z) < 1e-3
    safe = jnp.where(small, 1.0, z)
    return jnp.where(small, 1.0 - 0.5 * z + z**2 / 12.0, safe / jnp.expm1(safe))


def discretize_density(density: Callable[[jax.Array], jax.Array], grid: Grid) -> jax.Array:
    """Cell values of an (unnormalised) density taken at the cell centres, normalised so that
    sum_i p_i |cell| = 1. `density` maps points [..., dim] to values [...]."""
    values = density(grid.points())
    return values / (jnp.sum(values) * grid.cell_volume)


def total_mass(p: jax.Array, grid: Grid) -> jax.Array:
    """sum_i p_i |cell|."""
    return jnp.sum(p) * grid.cell_volume


def l1_distance(p: jax.Array, q: jax.Array, grid: Grid) -> jax.Array:
    """int |p - q| dx on the grid (twice the total-variation distance)."""
    return jnp.sum(jnp.abs(p - q)) * grid.cell_volume


def scharfetter_gummel_coefficients(drift, diffusion_coefficients, grid: Grid):
    """Per axis k, the face coefficients (c_minus, c_plus) with J_{i+1/2} = c_minus p_i - c_plus p_{i+1}:

        c_minus = (D_k / h_k) B(-Pe),   c_plus = (D_k / h_k) B(Pe),   Pe = a_k(x_{i+1/2}) h_k / D_k.

    drift(t, x) maps points [..., dim] to [..., dim]; diffusion_coefficients holds D_k = sigma_k^2 / 2.
    """
    coefficients = []
    for axis in range(grid.dim):
        h, diffusion = grid.spacing[axis], diffusion_coefficients[axis]
        face_drift = drift(0.0, grid.face_points(axis))[..., axis]
        peclet = face_drift * h / diffusion
        coefficients.append((diffusion / h * bernoulli_function(-peclet), diffusion / h * bernoulli_function(peclet)))
    return tuple(coefficients)


def fokker_planck_rhs(p: jax.Array, coefficients, grid: Grid) -> jax.Array:
    """dp/dt = -sum_k (J_{k, i+1/2} - J_{k, i-1/2}) / h_k with zero flux through the boundary.
    Linear in p; its transpose is the backward (Kolmogorov) generator, see kolmogorov_backward."""
    rate = jnp.zeros_like(p)
    for axis, (c_minus, c_plus) in enumerate(coefficients):
        n = p.shape[axis]
        left = jax.lax.slice_in_dim(p, 0, n - 1, axis=axis)
        right = jax.lax.slice_in_dim(p, 1, n, axis=axis)
        flux = c_minus * left - c_plus * right
        pad = [(0, 0)] * p.ndim
        pad[axis] = (1, 1)
        flux = jnp.pad(flux, pad)
        rate = rate - jnp.diff(flux, axis=axis) / grid.spacing[axis]
    return rate


def max_stable_time_step(coefficients, grid: Grid, safety: float = 0.9) -> jax.Array:
    """safety / max_i (outflow rate of cell i): the forward-Euler step below which
    p^{n+1} = p^n + dt dp/dt is a non-negative combination of p^n (positivity, stability)."""
    shape = tuple(grid.num_cells)
    outflow = jnp.zeros(shape)
    for axis, (c_minus, c_plus) in enumerate(coefficients):
        pad_hi, pad_lo = [(0, 0)] * len(shape), [(0, 0)] * len(shape)
        pad_hi[axis], pad_lo[axis] = (0, 1), (1, 0)
        # a cell loses c_minus through its upper face and c_plus through its lower face
        outflow = outflow + (jnp.pad(c_minus, pad_hi) + jnp.pad(c_plus, pad_lo)) / grid.spacing[axis]
    return safety / jnp.max(outflow)


def evolve_linear(rate: Callable[[jax.Array], jax.Array], state0: jax.Array, times: jax.Array, dt_max: jax.Array):
    """Forward-Euler integration of d state / dt = rate(state) from times[0], returning the state
    at every entry of `times` (increasing), shape [len(times), *state0.shape]. Each interval is
    split into ceil(length / dt_max) equal steps, so no step exceeds dt_max."""

    def advance(state, interval):
        t_start, t_end = interval
        num_steps = jnp.maximum(jnp.ceil((t_end - t_start) / dt_max), 1).astype(jnp.int32)
        dt = (t_end - t_start) / num_steps
        state = jax.lax.fori_loop(0, num_steps, lambda _, s: s + dt * rate(s), state)
        return state, state

    _, states = jax.lax.scan(advance, state0, (times[:-1], times[1:]))
    return jnp.concatenate([state0[None], states], axis=0)


def solve_fokker_planck(p0: jax.Array, drift, diffusion_coefficients, grid: Grid, times: jax.Array) -> jax.Array:
    """Density at each time in `times` (times[0] is the time of p0), shape [len(times), *num_cells]."""
    coefficients = scharfetter_gummel_coefficients(drift, diffusion_coefficients, grid)
    dt_max = max_stable_time_step(coefficients, grid)
    return evolve_linear(lambda p: fokker_planck_rhs(p, coefficients, grid), p0, times, dt_max)


def grid_cdf(p: jax.Array, grid: Grid, x: jax.Array) -> jax.Array:
    """CDF of a 1-D grid density (piecewise constant per cell, hence piecewise linear CDF) at x."""
    cumulative = jnp.concatenate([jnp.zeros(1), jnp.cumsum(p) * grid.spacing[0]])
    return jnp.interp(x, grid.edges(0), cumulative / cumulative[-1])


def sample_grid_density(key: jax.Array, p: jax.Array, grid: Grid, num_samples: int) -> jax.Array:
    """i.i.d. draws from a 1-D grid density by inverting its piecewise-linear CDF, shape [num_samples]."""
    cumulative = jnp.concatenate([jnp.zeros(1), jnp.cumsum(p)])
    cumulative = cumulative / cumulative[-1]
    return jnp.interp(jax.random.uniform(key, (num_samples,)), cumulative, grid.edges(0))
