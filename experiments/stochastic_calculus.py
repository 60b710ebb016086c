"""Stochastic-calculus studies: every link of the notes' chain, measured, plotted and tabulated.

    python -m experiments.stochastic_calculus --workdir=DIR
    python -m experiments.stochastic_calculus --workdir=DIR --studies=ito,markov --num_paths=5000

Studies (run in this order; `--studies` picks a comma-separated subset):
  random_walk, brownian, sde_convergence, ito, fokker_planck, markov, backward_kolmogorov,
  time_reversal.

Writes DIR/<study>.png, DIR/results.md (one row per claim: measured value, its 95% CI
half-width, the expected value, the pass rule and pass/fail) and DIR/results.json. Each
study draws from its own key, fold_in(PRNGKey(seed), study index), so a subset reproduces
the numbers of a full run. Exits 1 if any claim fails, 2 on bad input.

Hardware and time: the default sizes take about 220 s of CPU time on 2 CPU cores
(docs/stochastic_calculus.md holds a full run and its timing).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time

from absl import app, flags

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from genjax.data.gaussian_mixture import make_gaussian_mixture, perturbed_score_fn  # noqa: E402
from genjax.processes import VPSDE  # noqa: E402
from genjax.stochastic import (  # noqa: E402
    brownian,
    convergence,
    fokker_planck,
    ito,
    kolmogorov_backward,
    markov,
    models,
    random_walk,
    sde_solvers,
    statistics,
    time_reversal,
)
from genjax.stochastic.fokker_planck import Grid  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for the figures and the results table.")
flags.DEFINE_list("studies", "all", "Comma-separated studies to run, or 'all'.")
flags.DEFINE_integer("seed", 0, "Root PRNG seed.")
flags.DEFINE_integer("num_paths", 20000, "Monte Carlo paths (a multiple of 20) for the walk, Brownian, Ito, histogram and reverse-SDE studies.")
flags.DEFINE_integer("walk_steps", 100, "Steps of the random walk.")
flags.DEFINE_integer("convergence_paths", 1000, "Brownian paths per solver in the convergence study (a multiple of 20).")
flags.DEFINE_integer("num_steps", 200, "Time steps of the SDE simulations (Ito moments, histograms, reverse SDE).")
flags.DEFINE_integer("fp_cells", 400, "Cells of the finest 1-D Fokker-Planck grid (a multiple of 4).")
flags.DEFINE_integer("fp_cells_2d", 64, "Cells per axis of the finest 2-D Fokker-Planck grid (a multiple of 16).")
flags.DEFINE_integer("backward_paths", 4000, "Monte Carlo paths per start point in the backward-Kolmogorov study.")
flags.mark_flag_as_required("workdir")

FLOAT32_EPS = float(np.finfo(np.float32).eps)
FIGURE_DPI = 72
Z95 = statistics.Z_95


@dataclasses.dataclass(frozen=True)
class Sizes:
    num_paths: int
    walk_steps: int
    convergence_paths: int
    num_steps: int
    fp_cells: int
    fp_cells_2d: int
    backward_paths: int


MEASURED, BY_CONSTRUCTION = "measured", "by construction"


@dataclasses.dataclass(frozen=True)
class Row:
    """One claim: measured value, 95% CI half-width (None if exact), expected value, rule, verdict.

    kind: MEASURED for evidence about the mathematics (a statistic, an observed rate, a
    convergence order), BY_CONSTRUCTION for an identity the code satisfies whatever the inputs
    (exact integer arithmetic, an adjoint taken with `jax.linear_transpose`, a conservative
    scheme, autodiff): these check the implementation, not the claim."""

    study: str
    claim: str
    measured: float
    uncertainty: float | None
    expected: float | str
    rule: str
    passed: bool
    kind: str = MEASURED


def by_construction(row: Row) -> Row:
    return dataclasses.replace(row, kind=BY_CONSTRUCTION)


# ----------------------------------------------------------------------------- row builders
def within_standard_errors(study, claim, estimate, standard_error, expected, k=4.0) -> Row:
    """Monte Carlo claim: |estimate - expected| <= k SE."""
    estimate, standard_error, expected = float(estimate), float(standard_error), float(expected)
    return Row(
        study, claim, estimate, Z95 * standard_error, expected, f"|m - e| <= {k:g} SE",
        abs(estimate - expected) <= k * standard_error,
    )


def rejects_value(study, claim, estimate, standard_error, wrong_value, k=4.0) -> Row:
    """Control claim: the estimate is more than k SE away from a value a wrong theory predicts."""
    estimate, standard_error, wrong_value = float(estimate), float(standard_error), float(wrong_value)
    return Row(
        study, claim, estimate, Z95 * standard_error, f"not {wrong_value:.4g}", f"|m - {wrong_value:.4g}| > {k:g} SE",
        abs(estimate - wrong_value) > k * standard_error,
    )


def order_row(study, claim, order, standard_error, expected) -> Row:
    """Convergence-order claim: the expected order lies in the window fit +- 4 SE, whose
    half-width is below 1/4 (so it could not also hold an order 1/2 away)."""
    order, standard_error = float(order), float(standard_error)
    low, high = convergence.order_window(order, standard_error)
    narrow = convergence.window_tells_orders_apart(standard_error)
    return Row(
        study, claim, order, Z95 * standard_error, float(expected),
        f"e in m ± 4 SE = [{low:.3g}, {high:.3g}], 4 SE = {high - order:.2g} < {convergence.ORDER_SPACING / 2:g}",
        narrow and low <= expected <= high,
    )


def order_excluded_row(study, claim, order, standard_error, wrong_order) -> Row:
    """Control: an order 1/2 away from the claim lies outside the window fit +- 4 SE."""
    order, standard_error = float(order), float(standard_error)
    low, high = convergence.order_window(order, standard_error)
    return Row(
        study, claim, order, Z95 * standard_error, f"not {wrong_order:g}",
        f"{wrong_order:g} outside [{low:.3g}, {high:.3g}]", not low <= wrong_order <= high,
    )


def at_most(study, claim, measured, bound, expected, why) -> Row:
    measured = float(measured)
    return Row(study, claim, measured, None, expected, f"<= {float(bound):.3g} ({why})", measured <= float(bound))


def at_least(study, claim, measured, bound, expected, why) -> Row:
    measured = float(measured)
    return Row(study, claim, measured, None, expected, f">= {float(bound):.3g} ({why})", measured >= float(bound))


def chi_square_row(study, claim, counts, probabilities) -> Row:
    """Goodness of fit: X^2 / dof ~ 1 under the claim; passes unless p < 0.001."""
    statistic, dof, p_value = statistics.chi_square_test(counts, probabilities)
    dof = int(dof)
    return Row(
        study, claim, float(statistic) / dof, float(statistics.chi_square_per_dof_half_width(dof)), 1.0,
        f"chi-square p = {float(p_value):.3g} >= 0.001 (dof {dof})", float(p_value) >= 1e-3,
    )


def ks_row(study, claim, samples, cdf, recovers=True) -> Row:
    """Kolmogorov-Smirnov distance to a law: below the 99% critical value if the claim is that the
    samples follow it, above it if the claim is that they do not."""
    n = samples.shape[0]
    distance = float(statistics.kolmogorov_smirnov_statistic(samples, cdf))
    critical = statistics.kolmogorov_smirnov_critical_value(n, 0.99)
    half_width = statistics.kolmogorov_smirnov_critical_value(n, 0.95)
    if recovers:
        return Row(study, claim, distance, half_width, 0.0, f"D <= {critical:.3g} (KS 99%, n = {n})", distance <= critical)
    return Row(study, claim, distance, half_width, f"> {critical:.3g}", f"D > {critical:.3g} (KS 99%, n = {n})", distance > critical)


# ----------------------------------------------------------------------------- plotting
def save_figure(fig, workdir: str, name: str) -> None:
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, f"{name}.png"), dpi=FIGURE_DPI)
    plt.close(fig)


def loglog_guide(ax, x, anchor_y, slope, label):
    """A dashed reference line y = anchor_y (x / x[0])^slope."""
    x = np.asarray(x, dtype=float)
    ax.loglog(x, anchor_y * (x / x[0]) ** slope, "k--", lw=0.8, alpha=0.6)
    ax.text(x[-1], anchor_y * (x[-1] / x[0]) ** slope, f" {label}", fontsize=7, va="center")


# ----------------------------------------------------------------------------- 1. random walk
def study_random_walk(key, sizes: Sizes, workdir: str) -> list[Row]:
    study, n, num_paths = "random_walk", sizes.walk_steps, sizes.num_paths
    paths = jax.jit(random_walk.random_walk_paths, static_argnums=(1, 2))(key, num_paths, n)
    final = paths[:, -1].astype(jnp.float32)
    steps = jnp.arange(1, n + 1, dtype=jnp.float32)

    def variance_slope(sample):
        return statistics.least_squares_slope(steps, jnp.var(sample[:, 1:].astype(jnp.float32), axis=0, ddof=1))[0]

    mean, mean_se = statistics.mean_and_standard_error(final)
    variance, variance_se = statistics.variance_and_standard_error(final)
    slope, slope_se = jax.jit(functools.partial(statistics.jackknife_standard_error, variance_slope))(paths)
    split = 2 * n // 5
    first = random_walk.increments(paths, 0, split).astype(jnp.float32)
    second = random_walk.increments(paths, split, n - split).astype(jnp.float32)
    corr, corr_se = statistics.correlation_and_standard_error(first, second)
    corr_sq, corr_sq_se = statistics.correlation_and_standard_error(first**2, second**2)
    length = n // 5
    late = random_walk.increments(paths, n - length, length)
    late_counts = jnp.bincount(late + length, length=2 * length + 1)
    kernel = markov.random_walk_kernel(length)

    rows = [
        within_standard_errors(study, f"E[S_n] = 0 (n = {n})", mean, mean_se, 0.0),
        within_standard_errors(study, f"Var[S_n] = n (n = {n})", variance, variance_se, n),
        within_standard_errors(study, "slope of Var[S_k] against k = 1", slope, slope_se, 1.0),
        within_standard_errors(study, f"corr(S_{split} - S_0, S_{n} - S_{split}) = 0 (disjoint increments)", corr, corr_se, 0.0),
        within_standard_errors(study, "corr of squared disjoint increments = 0 (beyond linear)", corr_sq, corr_sq_se, 0.0),
        chi_square_row(study, f"law of S_{n} - S_{n - length} = law of S_{length} (binomial)", late_counts, kernel),
    ]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    k_axis = np.arange(n + 1)
    ax.plot(k_axis, np.asarray(paths[:25]).T, lw=0.6, alpha=0.7)
    for c in (1, 2):
        ax.plot(k_axis, c * np.sqrt(k_axis), "k--", lw=0.8)
        ax.plot(k_axis, -c * np.sqrt(k_axis), "k--", lw=0.8)
    ax.set(title="25 walks, envelopes ±√n and ±2√n", xlabel="step n", ylabel="S_n")
    ax = axes[1]
    floats = np.asarray(paths, dtype=np.float32)
    means, variances = floats.mean(0), floats.var(0, ddof=1)
    se_mean = floats.std(0, ddof=1) / np.sqrt(num_paths)
    ax.fill_between(k_axis, means - Z95 * se_mean, means + Z95 * se_mean, alpha=0.3, label="mean ± 95% CI")
    ax.plot(k_axis, means, lw=1)
    ax.plot(k_axis, variances, lw=1.5, label="sample variance")
    ax.plot(k_axis, k_axis, "k--", lw=0.8, label="n")
    ax.set(title="E[S_n] = 0, Var[S_n] = n", xlabel="step n")
    ax.legend(fontsize=8)
    ax = axes[2]
    support = np.arange(-length, length + 1)
    even = (support + length) % 2 == 0
    for start in (0, n // 2 - length // 2, n - length):
        inc = np.asarray(random_walk.increments(paths, start, length))
        freq = np.bincount(inc + length, minlength=2 * length + 1) / num_paths
        ax.plot(support[even], freq[even], "o", ms=3, label=f"S_{start + length} - S_{start}")
    ax.plot(support[even], np.asarray(kernel)[even], "k-", lw=1, label=f"Bin: law of S_{length}")
    ax.set(title=f"increments over {length} steps: same law anywhere", xlabel="increment")
    ax.legend(fontsize=8)
    save_figure(fig, workdir, study)
    return rows


# ----------------------------------------------------------------------------- 2. Brownian motion
def study_brownian(key, sizes: Sizes, workdir: str) -> list[Row]:
    study, num_paths = "brownian", sizes.num_paths
    walk_key, bm_key = jax.random.split(key)
    n_donsker = 1024
    walk = jax.jit(random_walk.random_walk_paths, static_argnums=(1, 2))(walk_key, num_paths, n_donsker)
    w_n = brownian.rescaled_random_walk(walk, n_donsker, jnp.array([0.25, 0.75, 1.0]))
    increment = w_n[:, 1] - w_n[:, 0]
    inc_var, inc_var_se = statistics.variance_and_standard_error(increment)

    def excess_kurtosis(sample):
        centred = sample - jnp.mean(sample)
        return jnp.mean(centred**4) / jnp.mean(centred**2) ** 2 - 3.0

    kurtosis, kurtosis_se = jax.jit(functools.partial(statistics.jackknife_standard_error, excess_kurtosis))(increment)

    exact_ns = 2 ** np.arange(4, 13)
    sup_distance_fn = jax.jit(brownian.walk_normal_kolmogorov_distance, static_argnums=0)
    sup_distance = np.array([float(sup_distance_fn(int(m))) for m in exact_ns])
    berry_esseen_slope, _ = statistics.least_squares_slope(jnp.log(exact_ns), jnp.log(sup_distance))

    n_fine = 1024
    bm = jax.jit(brownian.brownian_paths, static_argnums=(1, 2, 3))(bm_key, num_paths, n_fine, 1.0)
    partitions = np.array([16, 64, 256, 1024])
    qv = np.stack([np.asarray(brownian.quadratic_variation(bm[:, :: n_fine // m])) for m in partitions], 1)
    fv = np.stack([np.asarray(brownian.first_variation(bm[:, :: n_fine // m])) for m in partitions], 1)
    qv_mean, qv_se = statistics.mean_and_standard_error(jnp.asarray(qv[:, -1]))
    qv_msq, qv_msq_se = statistics.mean_and_standard_error(jnp.asarray((qv[:, -1] - 1.0) ** 2))
    fv_mean, fv_se = statistics.mean_and_standard_error(jnp.asarray(fv[:, -1]))

    rows = [
        within_standard_errors(study, f"Var[W^n(0.75) - W^n(0.25)] = 0.5 (n = {n_donsker})", inc_var, inc_var_se, 0.5),
        within_standard_errors(study, "excess kurtosis of that increment = 0 (Gaussian)", kurtosis, kurtosis_se, 0.0),
        Row(
            study, "sup|P(S_n/√n <= x) - Φ(x)| ∝ n^a, fitted a (n = 16..4096, exact)", float(berry_esseen_slope), None,
            -0.5, "|m - e| <= 0.01 (exact binomial)", abs(float(berry_esseen_slope) + 0.5) <= 0.01,
        ),
        within_standard_errors(study, f"E[W]_1 = 1, quadratic variation (N = {n_fine})", qv_mean, qv_se, 1.0),
        within_standard_errors(study, f"E([W]_1 - 1)^2 = 2/N -> 0 (N = {n_fine})", qv_msq, qv_msq_se, 2.0 / n_fine),
        within_standard_errors(
            study, f"first variation E sum|dW| = √(2N/π) -> ∞ (N = {n_fine})", fv_mean, fv_se, math.sqrt(2 * n_fine / math.pi)
        ),
    ]

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    ax = axes[0]
    for row, (m, colour) in enumerate(zip((4, 16, 256), ("C0", "C1", "C2"))):
        times = np.arange(m + 1) / m
        ax.step(times, np.asarray(walk[row, : m + 1]) / np.sqrt(m), where="post", color=colour, label=f"W^n, n = {m}")
    ax.plot(np.arange(n_fine + 1) / n_fine, np.asarray(bm[0]), "k", lw=0.6, label="Brownian path")
    ax.set(title="rescaled walks S_[nt]/√n", xlabel="t")
    ax.legend(fontsize=7)
    ax = axes[1]
    x = np.linspace(-3, 3, 400)
    for m in (1, 4, 16, 64):
        atoms = np.arange(-m, m + 1) / np.sqrt(m)
        cdf = np.concatenate([[0.0], np.cumsum(np.asarray(markov.random_walk_kernel(m)))])
        ax.plot(x, cdf[np.searchsorted(atoms, x, side="right")], lw=1, label=f"n = {m}")
    ax.plot(x, np.asarray(jax.scipy.stats.norm.cdf(x)), "k--", lw=1, label="Φ")
    ax.set(title="CDF of W^n(1) -> Φ (Donsker)", xlabel="x")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.loglog(exact_ns, sup_distance, "o-", ms=3, label="exact sup-distance")
    loglog_guide(ax, exact_ns, sup_distance[0], -0.5, "n^-1/2")
    ax.set(title=f"Berry-Esseen rate, fitted slope {float(berry_esseen_slope):.3f}", xlabel="n")
    ax.legend(fontsize=7)
    ax = axes[3]
    ax.semilogx(partitions, qv.mean(0), "o-", label="E[W]_1 (quadratic variation)")
    ax.fill_between(partitions, qv.mean(0) - qv.std(0), qv.mean(0) + qv.std(0), alpha=0.3, label="± 1 sd across paths")
    ax.semilogx(partitions, fv.mean(0) / np.sqrt(partitions), "s-", label="E sum|dW| / √N")
    ax.axhline(math.sqrt(2 / math.pi), color="k", ls=":", lw=0.8)
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.set(title="[W]_1 -> 1; first variation ~ √N", xlabel="partition size N")
    ax.legend(fontsize=7)
    save_figure(fig, workdir, study)
    return rows


# ----------------------------------------------------------------------------- 3. SDE convergence orders
def measure_errors(keys, model, x0, step_counts, solver, reference):
    run = jax.jit(
        lambda k: convergence.pathwise_errors(k, model.drift, model.diffusion, x0, 1.0, step_counts, solver, reference, 2.0**-11)
    )
    return run(keys)[..., 0]


def study_sde_convergence(key, sizes: Sizes, workdir: str) -> list[Row]:
    study = "sde_convergence"
    keys = jax.random.split(key, sizes.convergence_paths)
    x0 = jnp.ones(1)
    gbm = models.GeometricBrownianMotion(mu=1.0, sigma=0.8)
    ou = models.OrnsteinUhlenbeck(theta=2.0, sigma=1.0)
    well = models.DoubleWell(depth=0.25, sigma=1.0)
    exact_gbm = lambda bm: gbm.exact_solution(x0, 1.0, bm.evaluate(0.0, 1.0))

    def fine_reference(model):
        return lambda bm: sde_solvers.solve_on_path(model.drift, model.diffusion, x0, bm, 0.0, 1.0, 1024, "shark")

    # Step counts where each error is in its asymptotic regime (coarser steps bias the fit:
    # Milstein's local slopes on GBM are 0.81, 0.94 between 4, 8, 16 steps; ShARK's 1.85, 1.62
    # between 8, 16, 32 on the double well).
    gbm_counts, additive_counts, shark_counts = (16, 32, 64, 128), (8, 16, 32, 64, 128), (32, 64, 128, 256)
    strong_cases = [  # (label, model, step counts, solver, reference, expected strong order)
        ("GBM, Euler-Maruyama", gbm, gbm_counts, "euler_maruyama", exact_gbm, 0.5),
        ("GBM, Ito Milstein", gbm, gbm_counts, "ito_milstein", exact_gbm, 1.0),
        ("GBM, Heun (Stratonovich drift)", gbm, gbm_counts, "heun", exact_gbm, 1.0),
        ("GBM, SPaRK (Stratonovich drift)", gbm, gbm_counts, "spark", exact_gbm, 1.0),
        ("OU (additive), Euler-Maruyama", ou, additive_counts, "euler_maruyama", fine_reference(ou), 1.0),
        ("double well (additive), ShARK", well, shark_counts, "shark", fine_reference(well), 1.5),
    ]
    # Weak errors are differences of means, so they need more paths than strong ones. For f(x) = x
    # both schemes have E X^h_T = (1 + mu h)^(1/h), whose local slopes reach 0.99 only near 128
    # steps; Milstein's small paired variance affords those steps, Euler-Maruyama's does not.
    weak_keys = jax.random.split(jax.random.fold_in(key, 1), 4 * sizes.convergence_paths)
    weak_cases = [("GBM, Euler-Maruyama", "euler_maruyama", (4, 8, 16, 32, 64)), ("GBM, Ito Milstein", "ito_milstein", (32, 64, 128, 256))]
    rows, strong_curves, weak_curves, fitted = [], [], [], {}
    for label, model, counts, solver, reference, expected in strong_cases:
        errors = measure_errors(keys, model, x0, counts, solver, reference)
        h = 1.0 / jnp.asarray(counts, jnp.float32)
        order, order_se = convergence.strong_order(h, errors)
        fitted[label] = order, order_se
        rows.append(order_row(study, f"strong order, {label} (N = {counts[0]}..{counts[-1]})", order, order_se, expected))
        strong_curves.append((label, h, *statistics.mean_and_standard_error(jnp.abs(errors)), expected))
    # The windows tell the two orders apart on multiplicative noise: each excludes the other's order.
    rows.append(order_excluded_row(study, "... Euler-Maruyama's strong order on GBM is not Milstein's", *fitted["GBM, Euler-Maruyama"], 1.0))
    rows.append(order_excluded_row(study, "... Milstein's strong order on GBM is not Euler-Maruyama's", *fitted["GBM, Ito Milstein"], 0.5))
    for label, solver, counts in weak_cases:
        errors = measure_errors(weak_keys, gbm, x0, counts, solver, exact_gbm)
        h = 1.0 / jnp.asarray(counts, jnp.float32)
        order, order_se = convergence.weak_order(h, errors)
        rows.append(order_row(study, f"weak order (f(x) = x), {label} (N = {counts[0]}..{counts[-1]})", order, order_se, 1.0))
        mean, se = statistics.mean_and_standard_error(errors)
        weak_curves.append((label, h, jnp.abs(mean), se, 1.0))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, curves in ((axes[0], strong_curves), (axes[1], weak_curves)):
        for i, (label, h, mean, se, expected) in enumerate(curves):
            h = np.asarray(h)
            ax.errorbar(h, np.asarray(mean), yerr=Z95 * np.asarray(se), fmt="o-", ms=3, color=f"C{i}", label=f"{label} (order {expected:g})")
            loglog_guide(ax, h, float(mean[0]) * 1.3, expected, f"h^{expected:g}")
        ax.set(xscale="log", yscale="log", xlabel="step h")
        ax.legend(fontsize=7)
    axes[0].set_title("strong error E|X_T^h - X_T| (95% CI)")
    axes[1].set_title("weak error |E[X_T^h - X_T]| (paired, 95% CI)")
    save_figure(fig, workdir, study)
    return rows


# ----------------------------------------------------------------------------- 4. Ito
def study_ito(key, sizes: Sizes, workdir: str) -> list[Row]:
    study, num_paths = "ito", sizes.num_paths
    path_key, gbm_key = jax.random.split(key)
    n_max = 512  # coarse steps; the path is sampled twice as finely for the midpoints
    fine = jax.jit(brownian.brownian_paths, static_argnums=(1, 2, 3))(path_key, num_paths, 2 * n_max, 1.0)
    w_t = fine[:, -1]
    partitions = np.array([8, 32, 128, 512])
    ito_err, strat_err, strat_minus_ito = [], [], []
    for m in partitions:
        on_fine = fine[:, :: n_max // m]  # 2m steps
        coarse = on_fine[:, ::2]
        ito_value = ito.ito_sum(coarse, coarse)
        strat_value = ito.stratonovich_midpoint_sum(on_fine, on_fine)
        ito_err.append(ito_value - ito.ito_integral_w_dw(w_t, 1.0))
        strat_err.append(strat_value - ito.stratonovich_integral_w_dw(w_t))
        strat_minus_ito.append(strat_value - ito_value)
    ito_msq = [statistics.mean_and_standard_error(e**2) for e in ito_err]
    strat_msq = [statistics.mean_and_standard_error(e**2) for e in strat_err]
    gap, gap_se = statistics.mean_and_standard_error(strat_minus_ito[-1])

    gbm = models.GeometricBrownianMotion(mu=0.5, sigma=0.6)
    power = 2.0
    f = lambda x: x**power
    times = jnp.linspace(0.0, 1.0, 11)
    x0 = jnp.ones((num_paths, 1))
    simulate = jax.jit(lambda k: sde_solvers.simulate_paths(k, gbm.drift, gbm.diffusion, x0, times, sizes.num_steps, "ito_milstein"))
    values = f(simulate(gbm_key)[..., 0])
    mc_mean, mc_se = statistics.mean_and_standard_error(values)
    # For f(x) = x^p under GBM, L f = c f, so E f(X_t) = f(x0) e^{c t}; c from the generator by autodiff.
    rate_ito = ito.ito_generator(f, gbm.drift, gbm.diffusion)(0.0, 1.0) / f(1.0)
    rate_chain = ito.ito_generator(f, gbm.drift, gbm.diffusion, second_order=False)(0.0, 1.0) / f(1.0)
    ito_curve, chain_curve = jnp.exp(rate_ito * times), jnp.exp(rate_chain * times)

    n = int(partitions[-1])
    rows = [
        within_standard_errors(study, f"E(Ito sum - (W_T^2 - T)/2)^2 = T^2/(2N) (N = {n})", *ito_msq[-1], 1.0 / (2 * n)),
        within_standard_errors(study, f"E(midpoint sum - W_T^2/2)^2 = T^2/(4N) (N = {n})", *strat_msq[-1], 1.0 / (4 * n)),
        within_standard_errors(study, "E[Stratonovich - Ito] = T/2 (the Ito correction)", gap, gap_se, 0.5),
        rejects_value(study, "... and it is not 0", gap, gap_se, 0.0),
        within_standard_errors(study, "Monte Carlo E[X_1^2], GBM = Ito's lemma e^{(2mu+sigma^2)t}", mc_mean[-1], mc_se[-1], ito_curve[-1]),
        rejects_value(study, "... and not the chain-rule value e^{2 mu t}", mc_mean[-1], mc_se[-1], chain_curve[-1]),
        by_construction(Row(
            study, "generator (L x^2)/x^2 by autodiff = 2 mu + sigma^2", float(rate_ito), None, 2 * gbm.mu + gbm.sigma**2,
            "|m - e| <= 1e-6 (float32)", abs(float(rate_ito) - (2 * gbm.mu + gbm.sigma**2)) <= 1e-6,
        )),
    ]

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    show = 400
    m_show = 32
    idx = int(np.where(partitions == m_show)[0][0])
    target_ito = np.asarray(ito.ito_integral_w_dw(w_t[:show], 1.0))
    target_strat = np.asarray(ito.stratonovich_integral_w_dw(w_t[:show]))
    ax.plot(target_ito, target_ito + np.asarray(ito_err[idx][:show]), ".", ms=3, label="Ito (left-point) sum vs (W²-T)/2")
    ax.plot(target_strat, target_strat + np.asarray(strat_err[idx][:show]), ".", ms=3, label="midpoint sum vs W²/2")
    lim = [min(target_ito.min(), 0), target_strat.max()]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set(title=f"∫W dW path by path (N = {m_show})", xlabel="closed form", ylabel="Riemann sum")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.errorbar(partitions, [float(m) for m, _ in ito_msq], yerr=[Z95 * float(s) for _, s in ito_msq], fmt="o-", ms=3, label="Ito sum")
    ax.errorbar(partitions, [float(m) for m, _ in strat_msq], yerr=[Z95 * float(s) for _, s in strat_msq], fmt="s-", ms=3, label="midpoint sum")
    ax.loglog(partitions, 1 / (2 * partitions), "k--", lw=0.8, label="T²/(2N)")
    ax.loglog(partitions, 1 / (4 * partitions), "k:", lw=0.8, label="T²/(4N)")
    ax.set(xscale="log", yscale="log", title="mean-square distance to closed form", xlabel="N")
    ax.legend(fontsize=7)
    ax = axes[2]
    t_np = np.asarray(times)
    ax.fill_between(t_np, mc_mean - Z95 * mc_se, mc_mean + Z95 * mc_se, alpha=0.4, label="Monte Carlo (Milstein) 95% CI")
    ax.plot(t_np, ito_curve, "k-", lw=1, label="Ito's lemma")
    ax.plot(t_np, chain_curve, "r--", lw=1, label="chain rule (no ½b²f'')")
    ax.set(title="E[X_t²] for GBM", xlabel="t")
    ax.legend(fontsize=7)
    save_figure(fig, workdir, study)
    return rows


# ----------------------------------------------------------------------------- 5. Fokker-Planck
def gaussian_density(points, mean, variance):
    """Product of independent 1-D normal densities over the last axis of points."""
    return jnp.prod(jnp.exp(-0.5 * (points - mean) ** 2 / variance) / jnp.sqrt(2 * jnp.pi * variance), axis=-1)


def solve_ou_on_grids(ou, mean0, variance0, lower, upper, cell_counts, t_final):
    """FP solutions of an OU process from a Gaussian start on grids of increasing resolution:
    (grids, densities at [0, t_final], exact densities at t_final)."""
    dim = len(lower)
    diffusion = tuple(float(d) for d in 0.5 * np.broadcast_to(np.asarray(ou.sigma, np.float32), (dim,)) ** 2)
    times = jnp.array([0.0, t_final])
    results = []
    for cells in cell_counts:
        grid = Grid(lower, upper, (cells,) * dim)
        p0 = fokker_planck.discretize_density(lambda x: gaussian_density(x, mean0, variance0), grid)
        solve = jax.jit(lambda p: fokker_planck.solve_fokker_planck(p, ou.drift, diffusion, grid, times))
        densities = solve(p0)
        mean_t, variance_t = ou.marginal_mean_variance(mean0, variance0, t_final)
        results.append((grid, densities, gaussian_density(grid.points(), mean_t, variance_t)))
    return results


def refinement_rows(study, label, results, shrink_factor=3.0):
    """Rows for a grid-refinement series: L1 error shrinking, observed order, mass, positivity."""
    l1 = np.array([float(fokker_planck.l1_distance(d[-1], exact, g)) for g, d, exact in results])
    cells = np.array([g.num_cells[0] for g, _, _ in results], dtype=float)
    order = -float(statistics.least_squares_slope(jnp.log(cells), jnp.log(l1))[0])
    mass_error = max(float(jnp.max(jnp.abs(jnp.sum(d, axis=tuple(range(1, d.ndim))) * g.cell_volume - 1.0))) for g, d, _ in results)
    minimum = min(float(jnp.min(d)) for _, d, _ in results)
    return [
        at_most(study, f"{label}: L1 to closed form at {int(cells[-1])} cells", l1[-1], l1[-2] / shrink_factor, 0.0,
                f"L1 at {int(cells[-2])} cells / {shrink_factor:g}"),
        Row(study, f"{label}: observed order of the L1 error in h", order, None, 2.0, "|m - e| <= 0.3 (deterministic)",
            abs(order - 2.0) <= 0.3),
        by_construction(at_most(study, f"{label}: max |mass - 1| over the run", mass_error, 1e-5, 0.0, "float32 rounding")),
        by_construction(at_least(study, f"{label}: min density", minimum, 0.0, ">= 0", "positivity")),
    ], l1, cells


def histogram_probabilities_1d(p, grid, edges):
    cdf = fokker_planck.grid_cdf(p, grid, edges)
    return jnp.diff(cdf)


def study_fokker_planck(key, sizes: Sizes, workdir: str) -> list[Row]:
    study = "fokker_planck"
    n1, n2 = sizes.fp_cells, sizes.fp_cells_2d
    rows = []
    # OU 1-D and 2-D against the closed-form transition density
    ou1 = models.OrnsteinUhlenbeck(theta=1.0, sigma=1.0)
    res1 = solve_ou_on_grids(ou1, 1.5, 0.04, (-5.0,), (5.0,), (n1 // 4, n1 // 2, n1), 1.0)
    new_rows, l1_1d, cells_1d = refinement_rows(study, "1-D OU", res1)
    rows += new_rows
    ou2 = models.OrnsteinUhlenbeck(theta=jnp.array([1.0, 2.0]), sigma=jnp.array([1.0, 0.7]))
    res2 = solve_ou_on_grids(ou2, jnp.array([1.0, -1.0]), jnp.array([0.09, 0.09]), (-4.0, -4.0), (4.0, 4.0), (n2 // 4, n2 // 2, n2), 1.0)
    new_rows, l1_2d, cells_2d = refinement_rows(study, "2-D OU", res2)
    rows += new_rows

    # Double well 1-D: FP against histograms of simulated paths, and the Gibbs stationary law
    well = models.DoubleWell(depth=0.25, sigma=0.8)
    grid = Grid((-3.0,), (3.0,), (n1,))
    start = lambda x: gaussian_density(x, 0.3, 0.04)
    p0 = fokker_planck.discretize_density(start, grid)
    times = jnp.array([0.0, 0.5, 2.0])
    diffusion = (0.5 * well.sigma**2,)
    fp_well = jax.jit(lambda p: fokker_planck.solve_fokker_planck(p, well.drift, diffusion, grid, times))(p0)
    path_key, path_key_2d = jax.random.split(key)
    x0 = 0.3 + 0.2 * jax.random.normal(jax.random.fold_in(path_key, 0), (sizes.num_paths, 1))
    simulate = jax.jit(lambda k, x: sde_solvers.simulate_paths(k, well.drift, well.diffusion, x, times, sizes.num_steps, "shark"))
    paths = simulate(path_key, x0)[..., 0]
    edges = jnp.linspace(-3.0, 3.0, 41)
    for i in (1, 2):
        counts, _ = jnp.histogram(jnp.clip(paths[:, i], -3.0, 3.0), bins=edges)
        rows.append(chi_square_row(study, f"double well: path histogram at t = {float(times[i]):g} vs FP", counts,
                                   histogram_probabilities_1d(fp_well[i], grid, edges)))
    gibbs_l1 = []
    for cells in (n1 // 4, n1 // 2):
        g = Grid((-3.0,), (3.0,), (cells,))
        late = jax.jit(lambda p: fokker_planck.solve_fokker_planck(p, well.drift, diffusion, g, jnp.array([0.0, 60.0])))(
            fokker_planck.discretize_density(start, g))[-1]
        gibbs = fokker_planck.discretize_density(well.unnormalised_stationary_density, g)
        gibbs_l1.append(float(fokker_planck.l1_distance(late, gibbs, g)))
    rows.append(at_most(study, f"double well: L1(FP at t = 60, exp(-2U/σ²)/Z), {n1 // 2} cells", gibbs_l1[1], gibbs_l1[0] / 3.0, 0.0,
                        f"L1 at {n1 // 4} cells / 3"))

    # Double well 2-D (double well in x, harmonic in y): FP against a 2-D histogram
    grid2 = Grid((-3.0, -3.0), (3.0, 3.0), (n2, n2))
    start2 = lambda x: gaussian_density(x, jnp.array([0.0, 0.5]), jnp.array([0.04, 0.04]))
    diffusion2 = (0.5 * well.sigma**2,) * 2
    times2 = jnp.array([0.0, 1.5])
    fp_well2 = jax.jit(lambda p: fokker_planck.solve_fokker_planck(p, well.drift, diffusion2, grid2, times2))(
        fokker_planck.discretize_density(start2, grid2))
    x0_2d = jnp.array([0.0, 0.5]) + 0.2 * jax.random.normal(jax.random.fold_in(path_key_2d, 0), (sizes.num_paths, 2))
    simulate2 = jax.jit(lambda k, x: sde_solvers.simulate_paths(k, well.drift, well.diffusion, x, times2, sizes.num_steps, "shark"))
    paths2 = jnp.clip(simulate2(path_key_2d, x0_2d)[:, -1], -3.0, 3.0)
    block = 4
    edges2 = jnp.linspace(-3.0, 3.0, n2 // block + 1)
    counts2, _, _ = jnp.histogram2d(paths2[:, 0], paths2[:, 1], bins=(edges2, edges2))
    block_mass = (fp_well2[-1] * grid2.cell_volume).reshape(n2 // block, block, n2 // block, block).sum((1, 3))
    rows.append(chi_square_row(study, "2-D double well: path histogram at t = 1.5 vs FP", counts2, block_mass))

    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    ax = axes[0, 0]
    g, d, exact = res1[-1]
    x = np.asarray(g.centers(0))
    ax.plot(x, np.asarray(d[0]), "C0", label="t = 0")
    ax.plot(x, np.asarray(d[-1]), "C1", lw=2, label="FP, t = 1")
    ax.plot(x, np.asarray(exact), "k--", lw=1, label="closed-form OU, t = 1")
    ax.set(title="1-D OU: finite-volume FP vs closed form", xlabel="x")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    ax.loglog(cells_1d, l1_1d, "o-", label="1-D OU")
    ax.loglog(cells_2d, l1_2d, "s-", label="2-D OU (cells per axis)")
    loglog_guide(ax, cells_1d, l1_1d[0] * 1.5, -2.0, "h^2")
    ax.set(title="L1 error at t = 1 vs grid size", xlabel="cells per axis")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    g, d, exact = res2[-1]
    ax.contour(np.asarray(g.centers(0)), np.asarray(g.centers(1)), np.asarray(d[-1]).T, levels=6, colors="C1")
    ax.contour(np.asarray(g.centers(0)), np.asarray(g.centers(1)), np.asarray(exact).T, levels=6, colors="k", linestyles="--", linewidths=0.8)
    ax.set(title="2-D OU at t = 1: FP (orange) vs exact (dashed)", xlabel="x", ylabel="y", xlim=(-2, 2.5), ylim=(-1.5, 1.5))
    ax = axes[1, 0]
    centers = np.asarray(grid.centers(0))
    mids = 0.5 * (np.asarray(edges[1:]) + np.asarray(edges[:-1]))
    width = float(edges[1] - edges[0])
    for i, colour in ((1, "C0"), (2, "C1")):
        counts, _ = np.histogram(np.clip(np.asarray(paths[:, i]), -3, 3), bins=np.asarray(edges))
        ax.bar(mids, counts / (sizes.num_paths * width), width=width, alpha=0.35, color=colour, label=f"paths, t = {float(times[i]):g}")
        ax.plot(centers, np.asarray(fp_well[i]), color=colour, lw=1.5, label=f"FP, t = {float(times[i]):g}")
    gibbs = fokker_planck.discretize_density(well.unnormalised_stationary_density, grid)
    ax.plot(centers, np.asarray(gibbs), "k--", lw=1, label="exp(-2U/σ²)/Z")
    ax.set(title="1-D double well: FP vs simulated paths", xlabel="x")
    ax.legend(fontsize=7)
    for ax, image, title in (
        (axes[1, 1], np.asarray(block_mass), "2-D double well, FP at t = 1.5 (binned)"),
        (axes[1, 2], np.asarray(counts2) / sizes.num_paths, "2-D double well, paths at t = 1.5"),
    ):
        ax.imshow(image.T, origin="lower", extent=(-3, 3, -3, 3), cmap="viridis")
        ax.set(title=title, xlabel="x", ylabel="y")
    save_figure(fig, workdir, study)
    return rows


# ----------------------------------------------------------------------------- 6. Markov / Chapman-Kolmogorov
def chapman_kolmogorov_bound(points, matrix_s_plus_t):
    """Worst-case float32 rounding of the K-term quadrature sum, in density units:
    K eps max(P_{s+t}) / h."""
    spacing = float(points[1] - points[0])
    return points.shape[0] * FLOAT32_EPS * float(jnp.max(matrix_s_plus_t)) / spacing


def study_markov(key, sizes: Sizes, workdir: str) -> list[Row]:
    study = "markov"
    m, n = 12, 18
    composed = markov.compose_kernels(markov.random_walk_path_counts(m), markov.random_walk_path_counts(n))
    direct = markov.random_walk_path_counts(m + n)
    integer_defect = int(jnp.max(jnp.abs(composed - direct)))

    before, after, k_condition = 20, 30, 2
    walk = jax.jit(random_walk.random_walk_paths, static_argnums=(1, 2))(key, sizes.num_paths, before + after)
    given = walk[:, before] == k_condition
    later = random_walk.increments(walk, before, after)
    counts = jnp.bincount(jnp.where(given, later + after, 2 * after + 1), length=2 * after + 2)[:-1]
    kernel_after = markov.random_walk_kernel(after)

    points = jnp.linspace(-8.0, 8.0, 401)
    interior = jnp.abs(points) <= 3.0
    s, t = 0.3, 0.7
    brownian_kernel = lambda time: markov.transition_matrix(lambda y, x: markov.gaussian_transition_density(y, x, time), points)
    ou = models.OrnsteinUhlenbeck(theta=1.0, sigma=1.0)
    ou_kernel = lambda time: markov.transition_matrix(lambda y, x: ou.transition_density(y, x, time), points)
    rows = [
        by_construction(Row(study, f"walk: N_{m} * N_{n} = N_{m + n} in path counts (exact integers)", float(integer_defect),
                            None, 0.0, "== 0 exactly", integer_defect == 0)),
        chi_square_row(study, f"walk: law of S_{before + after} - S_{before} given S_{before} = {k_condition} is P_{after}",
                       counts, kernel_after),
    ]
    for label, kernel in (("Brownian", brownian_kernel), ("OU", ou_kernel)):
        p_s, p_t, p_st = kernel(s), kernel(t), kernel(s + t)
        bound = chapman_kolmogorov_bound(points, p_st)
        defect = markov.chapman_kolmogorov_defect(p_s, p_t, p_st, points, interior)
        rows.append(at_most(study, f"{label}: max|P_s P_t - P_(s+t)| (s = {s}, t = {t}), density units", defect, bound, 0.0,
                            "float32 rounding of the sum"))
    control = markov.chapman_kolmogorov_defect(brownian_kernel(s), brownian_kernel(t), brownian_kernel(s + t - 0.1), points, interior)
    rows.append(at_least(study, "control: P_s P_t vs P_(s+t-0.1) differ (Brownian)", control,
                         100 * chapman_kolmogorov_bound(points, brownian_kernel(s + t)), "> 0", "100 x rounding bound"))

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    ax = axes[0]
    support = np.arange(-(m + n), m + n + 1)
    ax.bar(support, np.asarray(direct) / 2.0 ** (m + n), width=0.8, alpha=0.5, label=f"P_{m + n}")
    ax.plot(support, np.asarray(composed) / 2.0 ** (m + n), "k.", label=f"P_{m} * P_{n}")
    ax.set(title="random walk: exact Chapman-Kolmogorov", xlabel="displacement")
    ax.legend(fontsize=7)
    x_np = np.asarray(points)
    start = int(np.argmin(np.abs(x_np - 1.0)))
    for ax, label, kernel in ((axes[1], "Brownian", brownian_kernel), (axes[2], "OU", ou_kernel)):
        h = float(points[1] - points[0])
        ax.plot(x_np, np.asarray((kernel(s) @ kernel(t))[start]) / h, "C0", lw=2, label="P_s P_t (quadrature)")
        ax.plot(x_np, np.asarray(kernel(s + t)[start]) / h, "k--", lw=1, label="P_(s+t)")
        ax.plot(x_np, np.asarray(kernel(s + t - 0.1)[start]) / h, "r:", lw=1, label="P_(s+t-0.1) (control)")
        ax.set(title=f"{label} kernels from x = 1 (s = {s}, t = {t})", xlabel="y", xlim=(-4, 5))
        ax.legend(fontsize=7)
    ax = axes[3]
    support = np.arange(-after, after + 1)
    even = (support + after) % 2 == 0
    total = max(int(jnp.sum(counts)), 1)
    ax.plot(support[even], np.asarray(counts)[even] / total, "o", ms=3, label=f"simulated, given S_{before} = {k_condition}")
    ax.plot(support[even], np.asarray(kernel_after)[even], "k-", lw=1, label=f"P_{after}")
    ax.set(title="Markov property of the walk", xlabel=f"S_{before + after} - S_{before}")
    ax.legend(fontsize=7)
    save_figure(fig, workdir, study)
    return rows


# ----------------------------------------------------------------------------- 7. backward Kolmogorov
def study_backward_kolmogorov(key, sizes: Sizes, workdir: str) -> list[Row]:
    study = "backward_kolmogorov"
    well = models.DoubleWell(depth=0.25, sigma=0.8)
    payoff = lambda x: jax.nn.sigmoid(4.0 * x[..., 0])
    grid = Grid((-3.0,), (3.0,), (sizes.fp_cells,))
    diffusion = (0.5 * well.sigma**2,)
    maturity = 1.0
    taus = jnp.linspace(0.0, maturity, 5)
    u = jax.jit(lambda f: kolmogorov_backward.solve_backward_kolmogorov(f, well.drift, diffusion, grid, taus))(payoff(grid.points()))
    u_now = u[-1]  # u(x, 0)
    starts = jnp.array([-1.0, -0.5, 0.0, 0.5, 1.0])

    def terminal_states(path_key, x):
        x0 = jnp.full((sizes.backward_paths, 1), x)
        return sde_solvers.simulate_paths(path_key, well.drift, well.diffusion, x0, (0.0, maturity), sizes.num_steps, "shark")[:, -1]

    finals = jax.jit(jax.vmap(terminal_states))(jax.random.split(key, starts.shape[0]), starts)
    mc_mean, mc_se = jax.vmap(lambda xs: kolmogorov_backward.feynman_kac_estimate(xs, payoff))(finals)
    pde_at_starts = jnp.interp(starts, grid.centers(0), u_now)
    rows = [
        within_standard_errors(study, f"E[f(X_1) | X_0 = {float(x):g}] (Monte Carlo) = u(x, 0) (backward PDE)", mc_mean[i], mc_se[i],
                               pde_at_starts[i])
        for i, x in enumerate(starts)
    ]
    p0 = fokker_planck.discretize_density(lambda x: gaussian_density(x, -0.5, 0.1), grid)
    p_final = jax.jit(lambda p: fokker_planck.solve_fokker_planck(p, well.drift, diffusion, grid, taus))(p0)[-1]
    duality_gap = abs(float(jnp.sum(u_now * p0) - jnp.sum(payoff(grid.points()) * p_final)) * grid.cell_volume)
    rows.append(by_construction(at_most(study, "duality: <u(., 0), p_0> = <f, p_T> (discrete adjoint, linear_transpose)",
                                        duality_gap, 1e-5, 0.0, "float32 rounding")))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    ax = axes[0]
    x = np.asarray(grid.centers(0))
    for i, tau in enumerate(np.asarray(taus)):
        ax.plot(x, np.asarray(u[i]), lw=1.5 if i in (0, len(taus) - 1) else 0.8, label=f"u(x, t = {maturity - tau:g})")
    ax.errorbar(np.asarray(starts), np.asarray(mc_mean), yerr=Z95 * np.asarray(mc_se), fmt="ko", ms=4, capsize=3,
                label="Monte Carlo E[f(X_1)|X_0=x], 95% CI")
    ax.set(title="backward Kolmogorov: u(x,t) = E[f(X_1) | X_t = x], double well", xlabel="x")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(x, np.asarray(well.potential(grid.points())), "k", label="U(x)")
    ax.plot(x, np.asarray(payoff(grid.points())), "C1", label="f(x) = sigmoid(4x)")
    ax.set(title="potential and payoff", xlabel="x", ylim=(-0.1, 2.0))
    ax.legend(fontsize=7)
    save_figure(fig, workdir, study)
    return rows


# ----------------------------------------------------------------------------- 8. time reversal
def study_time_reversal(key, sizes: Sizes, workdir: str) -> list[Row]:
    study = "time_reversal"
    num_paths, num_steps = sizes.num_paths, sizes.num_steps
    process = VPSDE(t_max=2.0, beta_min=2.0, beta_max=2.0)  # constant beta: dX = -X dt + sqrt(2) dW
    mixture = make_gaussian_mixture([0.3, 0.7], [[-2.0], [1.5]], [0.4, 0.6])
    t_max = process.t_max
    times = jnp.linspace(0.0, t_max, 5)
    reversed_times = t_max - times[::-1]  # s = T - t, increasing
    k_data, k_prior, k_forward, k_reverse, k_grid = jax.random.split(key, 5)

    def marginal(t):
        alpha, sigma = process.marginal_coefficients(t)
        return mixture.perturbed(alpha, sigma)

    def reverse(score, start, path_key):
        drift, diffusion = time_reversal.reverse_time_sde(process, score)
        run = jax.jit(lambda k, x: sde_solvers.simulate_paths(k, drift, diffusion, x, reversed_times, num_steps, "shark"))
        return run(path_key, start)[:, ::-1, 0]  # reorder to follow `times`

    forward_drift, forward_diffusion = time_reversal.forward_sde(process)
    forward = jax.jit(lambda k, x: sde_solvers.simulate_paths(k, forward_drift, forward_diffusion, x, times, num_steps, "shark"))(
        k_forward, mixture.sample(k_data, num_paths))[..., 0]
    start = marginal(t_max).sample(k_prior, num_paths)
    with_score = reverse(perturbed_score_fn(mixture, process), start, k_reverse)
    without_score = reverse(time_reversal.zero_score, start, k_reverse)

    def ks_over_time(samples):
        return np.array([float(statistics.kolmogorov_smirnov_statistic(samples[:, i], lambda x, t=t: time_reversal.gaussian_mixture_cdf(marginal(t), x)))
                         for i, t in enumerate(times)])

    ks_forward, ks_with, ks_without = ks_over_time(forward), ks_over_time(with_score), ks_over_time(without_score)
    p0_cdf = lambda x: time_reversal.gaussian_mixture_cdf(mixture, x)
    pT_cdf = lambda x: time_reversal.gaussian_mixture_cdf(marginal(t_max), x)
    rows = [
        ks_row(study, "forward SDE from p_0 reaches the exact p_T (mixture)", forward[:, -1], pT_cdf),
        ks_row(study, "reverse SDE with exact score, from p_T, recovers p_0 (mixture)", with_score[:, 0], p0_cdf),
        ks_row(study, "reverse SDE without the score term does not recover p_0", without_score[:, 0], p0_cdf, recovers=False),
    ]

    # A start with no closed-form p_t: the double-well Gibbs law; the score comes from the FP solver.
    well = models.DoubleWell(depth=0.5, sigma=0.8)
    grid = Grid((-6.0,), (6.0,), (sizes.fp_cells,))
    p0_grid = fokker_planck.discretize_density(well.unnormalised_stationary_density, grid)
    fp_times = t_max * jnp.linspace(0.0, 1.0, 101) ** 2  # dense near t = 0, where p_t changes fastest
    fp_drift = lambda t, x: process.drift(x, t)  # time-homogeneous for constant beta
    densities = jax.jit(lambda p: fokker_planck.solve_fokker_planck(p, fp_drift, (0.5 * process.beta_min,), grid, fp_times))(p0_grid)
    grid_start = fokker_planck.sample_grid_density(k_grid, densities[-1], grid, num_paths)[:, None]
    grid_with = reverse(time_reversal.grid_score(densities, fp_times, grid), grid_start, k_reverse)
    grid_without = reverse(time_reversal.zero_score, grid_start, k_reverse)
    grid_cdf = lambda x: fokker_planck.grid_cdf(p0_grid, grid, x)
    rows += [
        ks_row(study, "reverse SDE with Fokker-Planck score recovers p_0 (double-well Gibbs law)", grid_with[:, 0], grid_cdf),
        ks_row(study, "... and without the score term it does not", grid_without[:, 0], grid_cdf, recovers=False),
    ]

    fig, axes = plt.subplots(3, 6, figsize=(17, 7.5))
    x = np.linspace(-4.5, 4.5, 300)
    bins = np.linspace(-4.5, 4.5, 61)
    for row, (label, samples) in enumerate((("forward", forward), ("reverse, exact score", with_score), ("reverse, no score", without_score))):
        for col, t in enumerate(np.asarray(times)):
            ax = axes[row, col]
            ax.hist(np.asarray(samples[:, col]), bins=bins, density=True, alpha=0.5, color=f"C{row}")
            density = jnp.exp(jax.vmap(marginal(float(t)).log_prob)(jnp.asarray(x)[:, None]))
            ax.plot(x, np.asarray(density), "k", lw=1)
            ax.set_title(f"{label}, t = {t:g}", fontsize=8)
            ax.tick_params(labelsize=6)
    ax = axes[0, 5]
    t_np = np.asarray(times)
    ax.plot(t_np, ks_forward, "o-", ms=3, label="forward")
    ax.plot(t_np, ks_with, "s-", ms=3, label="reverse, exact score")
    ax.plot(t_np, ks_without, "^-", ms=3, label="reverse, no score")
    ax.axhline(statistics.kolmogorov_smirnov_critical_value(num_paths, 0.99), color="k", ls="--", lw=0.8, label="KS 99% critical")
    ax.set_yscale("log")
    ax.set_title("KS distance to exact p_t", fontsize=8)
    ax.set_xlabel("t", fontsize=7)
    ax.legend(fontsize=6)
    centers = np.asarray(grid.centers(0))
    for ax, samples, label in ((axes[1, 5], grid_with, "FP score"), (axes[2, 5], grid_without, "no score")):
        ax.hist(np.asarray(samples[:, 0]), bins=bins, density=True, alpha=0.5, color="C4")
        ax.plot(centers, np.asarray(p0_grid), "k", lw=1)
        ax.set_xlim(-4.5, 4.5)
        ax.set_title(f"double-well p_0, reverse with {label}", fontsize=8)
        ax.tick_params(labelsize=6)
    save_figure(fig, workdir, study)
    return rows


# ----------------------------------------------------------------------------- driver
STUDIES = {
    "random_walk": study_random_walk,
    "brownian": study_brownian,
    "sde_convergence": study_sde_convergence,
    "ito": study_ito,
    "fokker_planck": study_fokker_planck,
    "markov": study_markov,
    "backward_kolmogorov": study_backward_kolmogorov,
    "time_reversal": study_time_reversal,
}


def format_number(value) -> str:
    if value is None:
        return "exact"
    if isinstance(value, str):
        return value
    return f"{value:.4g}"


def claims_table(rows: list[Row]) -> list[str]:
    lines = [
        "| study | claim | measured | uncertainty (95%) | expected | pass rule | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        uncertainty = "—" if row.uncertainty is None else f"± {row.uncertainty:.2g}"
        cells = [row.study, row.claim, format_number(row.measured), uncertainty, format_number(row.expected), row.rule,
                 "pass" if row.passed else "**FAIL**"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def results_markdown(rows: list[Row], timings: dict[str, float], command: str) -> str:
    measured = [r for r in rows if r.kind == MEASURED]
    constructed = [r for r in rows if r.kind == BY_CONSTRUCTION]
    lines = ["## Measurements", "", *claims_table(measured)]
    if constructed:
        lines += [
            "", "## Identities that hold by construction", "",
            "Checks of the implementation, not evidence for the mathematics: each holds for any input by how the "
            "code computes it (exact integers, an adjoint taken with `jax.linear_transpose`, a conservative and "
            "positive scheme, autodiff).", "", *claims_table(constructed),
        ]
    passed = sum(r.passed for r in rows)
    timing = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
    lines += ["", f"{passed}/{len(rows)} claims pass ({len(measured)} measured, {len(constructed)} by construction). Command: `{command}`. Time: {timing}; total {sum(timings.values()):.0f} s."]
    return "\n".join(lines) + "\n"


def parse_studies(requested: list[str]) -> list[str] | None:
    if requested in (["all"], []):
        return list(STUDIES)
    return requested if all(name in STUDIES for name in requested) else None


def size_error(sizes: Sizes) -> str | None:
    """Why these sizes cannot run (jackknife groups of 20, grid refinements by 2 and 4x4 blocks), or None."""
    rules = [
        (sizes.num_paths % 20 == 0 and sizes.num_paths >= 100, "--num_paths must be a multiple of 20, at least 100"),
        (sizes.convergence_paths % 20 == 0 and sizes.convergence_paths >= 40, "--convergence_paths must be a multiple of 20, at least 40"),
        (sizes.walk_steps >= 10, "--walk_steps must be at least 10"),
        (sizes.num_steps >= 10, "--num_steps must be at least 10"),
        (sizes.fp_cells % 4 == 0 and sizes.fp_cells >= 40, "--fp_cells must be a multiple of 4, at least 40"),
        (sizes.fp_cells_2d % 16 == 0, "--fp_cells_2d must be a multiple of 16"),
        (sizes.backward_paths >= 2, "--backward_paths must be at least 2"),
    ]
    broken = [message for ok, message in rules if not ok]
    return "; ".join(broken) if broken else None


def main(argv):
    del argv
    studies = parse_studies(FLAGS.studies)
    if studies is None:
        unknown = [name for name in FLAGS.studies if name not in STUDIES]
        print(f"error: unknown study {', '.join(unknown)}; valid choices: all, {', '.join(STUDIES)}", file=sys.stderr)
        return 2
    sizes = Sizes(
        FLAGS.num_paths, FLAGS.walk_steps, FLAGS.convergence_paths, FLAGS.num_steps, FLAGS.fp_cells, FLAGS.fp_cells_2d,
        FLAGS.backward_paths,
    )
    if size_error(sizes):
        print(f"error: {size_error(sizes)}", file=sys.stderr)
        return 2
    workdir = FLAGS.workdir
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, ".write_test")
        with open(probe, "w") as handle:
            handle.write("")
        os.remove(probe)
    except OSError as error:
        print(f"error: cannot write to --workdir={workdir}: {error.strerror or error}", file=sys.stderr)
        return 2
    root = jax.random.key(FLAGS.seed)
    rows, timings = [], {}
    for name in studies:
        start = time.perf_counter()
        study_rows = STUDIES[name](jax.random.fold_in(root, list(STUDIES).index(name)), sizes, workdir)
        timings[name] = time.perf_counter() - start
        rows += study_rows
        print(f"{name}: {sum(r.passed for r in study_rows)}/{len(study_rows)} claims pass ({timings[name]:.1f} s)", flush=True)
    command = "python -m experiments.stochastic_calculus " + " ".join(a for a in sys.argv[1:] if not a.startswith("--workdir"))
    command = command.strip() + " --workdir=DIR"
    with open(os.path.join(workdir, "results.md"), "w") as handle:
        handle.write(results_markdown(rows, timings, command))
    with open(os.path.join(workdir, "results.json"), "w") as handle:
        json.dump(
            {
                "rows": [dataclasses.asdict(r) for r in rows],
                "timings_s": timings,
                "sizes": dataclasses.asdict(sizes),
                "seed": FLAGS.seed,
                "command": command,
                "backend": jax.default_backend(),
            },
            handle,
            indent=1,
        )
    failed = [r for r in rows if not r.passed]
    print(f"{len(rows) - len(failed)}/{len(rows)} claims pass; table in {os.path.join(workdir, 'results.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    app.run(main)
