"""The stochastic calculus the diffusion models start from, as small runnable pieces.

The chain, one module per link (each function's docstring gives its equation and source):

  random_walk          simple random walk: zero mean, linear variance, independent increments
  brownian             Brownian paths, Donsker's rescaled walk, quadratic variation
  models               SDEs with known answers: geometric Brownian motion, Ornstein-Uhlenbeck,
                       a double-well potential
  sde_solvers          diffrax terms, solvers (Euler-Maruyama, Milstein, Heun, SRK), path sampling
  convergence          strong and weak convergence orders on a shared Brownian path
  ito                  Ito's lemma (generator by autodiff), Ito versus Stratonovich sums
  fokker_planck        conservative, positive finite-volume Fokker-Planck solver (1-D and n-D)
  markov               transition kernels and the Chapman-Kolmogorov equation
  kolmogorov_backward  backward Kolmogorov equation (transpose of the Fokker-Planck operator)
                       and Feynman-Kac Monte Carlo
  time_reversal        Anderson's reverse-time SDE with an exact or a grid score
  statistics           Monte Carlo standard errors, jackknife, chi-square and KS tests

`python -m experiments.stochastic_calculus --workdir=DIR` reproduces every claim with
figures and a table; docs/stochastic_calculus.md shows a full run.
"""
from genjax.stochastic import (
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

__all__ = [
    "brownian",
    "convergence",
    "fokker_planck",
    "ito",
    "kolmogorov_backward",
    "markov",
    "models",
    "random_walk",
    "sde_solvers",
    "statistics",
    "time_reversal",
]
