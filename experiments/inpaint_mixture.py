"""Conditional sampling on a Gaussian mixture whose posterior is known exactly: how far each
linear-observation method lands from p(x_0 | y), all fed the mixture's exact score.

    python -m experiments.inpaint_mixture [--num_samples=4000] [--num_steps=200]

The mixture of tests/test_mixture_inpainting.py (weights 0.3 / 0.7, means (-1, -1.5) and
(1, 1.5), correlations +0.6 / -0.6), its first coordinate observed at 0.2. Rows: replacement
(exact observation), the posterior method with the Tweedie covariance and with the exact
likelihood term p_t(y | x) (genjax/data/mixture_observation.py), both with sigma_y = 0.3.
Columns: the share of the second mode (x_2 > 0), and the imputed coordinate's mean and standard
deviation, each beside the exact posterior's. Prints a Markdown table (about a minute on 2 CPU
cores).

Measured (4,000 draws, 200 steps): replacement 0.672 / 0.798 / 1.451 (exact 0.852 / 1.534 /
1.163); tweedie 0.706 / 0.947 / 1.389 and exact term 0.826 / 1.384 / 1.240 (exact 0.833 /
1.407 / 1.223).
"""
from __future__ import annotations

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from absl import logging as absl_logging

from genjax.data.gaussian_mixture import GaussianMixture, perturbed_score_fn
from genjax.data.mixture_observation import observation_log_likelihood_fn, observed_posterior
from genjax.processes.vp import VPSDE
from genjax.samplers.linear_observation import masked, sample_given_observation

flags.DEFINE_integer("num_samples", 4000, "Draws per method.")
flags.DEFINE_integer("num_steps", 200, "Euler-Maruyama steps.")
FLAGS = flags.FLAGS

MIXTURE = GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[-1.0, -1.5], [1.0, 1.5]]),
                          jnp.array([[[0.5, 0.3], [0.3, 0.5]], [[0.5, -0.3], [-0.3, 0.5]]]))
OBSERVED = jnp.array([[1.0, 0.0]])
Y = 0.2
NOISE_STD = 0.3


def exact_figures(noise_std: float) -> tuple[float, float, float]:
    """(P(x_2 > 0), E x_2, std x_2) of the exact posterior."""
    posterior = observed_posterior(MIXTURE, OBSERVED, jnp.array([Y]), noise_std)
    weights, means, covariances = (np.asarray(a, np.float64) for a in (posterior.weights, posterior.means,
                                                                        posterior.covariances))
    share = sum(w * 0.5 * (1 + math.erf(m[1] / math.sqrt(2 * c[1, 1]))) for w, m, c in zip(weights, means, covariances))
    mean = weights @ means[:, 1]
    return share, mean, math.sqrt(weights @ (covariances[:, 1, 1] + means[:, 1] ** 2) - mean**2)


def drawn_figures(method: str, noise_std: float, **options) -> tuple[float, float, float]:
    process = VPSDE()
    y = jnp.broadcast_to(jnp.array([Y, 0.0]), (FLAGS.num_samples, 2))
    result = jax.jit(lambda key: sample_given_observation(
        process, perturbed_score_fn(MIXTURE, process), key, y, masked(jnp.array([1.0, 0.0]), noise_std), (2,),
        FLAGS.num_steps, method=method, **options))(jax.random.key(7))
    imputed = np.asarray(result.samples)[:, 1]
    return float(np.mean(imputed > 0)), float(imputed.mean()), float(imputed.std())


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    if FLAGS.num_samples < 2 or FLAGS.num_steps < 1:
        sys.stderr.write(f"error: --num_samples={FLAGS.num_samples} must be >= 2 and --num_steps={FLAGS.num_steps} "
                         ">= 1\n")
        sys.exit(2)
    exact_term = observation_log_likelihood_fn(MIXTURE, VPSDE(), OBSERVED, NOISE_STD)
    rows = [("replacement", 0.0, drawn_figures("replacement", 0.0)),
            ("posterior, tweedie covariance", NOISE_STD, drawn_figures("posterior", NOISE_STD, covariance="tweedie")),
            ("posterior, exact likelihood term", NOISE_STD,
             drawn_figures("posterior", NOISE_STD, log_likelihood=lambda x, t, y: exact_term(x, t, y[:1])))]
    print(f"{FLAGS.num_samples} draws, {FLAGS.num_steps} steps; x_1 observed at {Y}")
    print("| method | sigma_y | share x_2 > 0 (exact) | mean x_2 (exact) | std x_2 (exact) |")
    print("|---|---|---|---|---|")
    for name, noise_std, drawn in rows:
        exact = exact_figures(noise_std)
        cells = " | ".join(f"{d:.3f} ({e:.3f})" for d, e in zip(drawn, exact))
        print(f"| {name} | {noise_std:g} | {cells} |")


if __name__ == "__main__":
    app.run(main)
