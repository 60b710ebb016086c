"""Samplers: from prior draws to data with a model (reverse SDE, probability flow, ...).

A model is a `views.Model` (a batched network function and what its output is; a bare
per-example function is a score model). The ODE samplers and the likelihood ask it for its
velocity, the others for its score (`views`); a model with no score is refused by the latter
with one line. Samplers vmap the per-example views (the network on a batch of one under
vmap), in eval mode; every sampler and the likelihood take `condition`, None or the [N]
class labels of the examples. Every sampler returns a `SampleResult` and
gives example i of a sample set the key fold_in(key, i), so sample sets do not depend on
batching (see `prior`).

References:
  B. D. O. Anderson, "Reverse-time diffusion equation models", Stochastic Processes and
    their Applications 12(3), 1982.
  Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, "Score-Based
    Generative Modeling through Stochastic Differential Equations", ICLR 2021 (eqs. 6, 13).
  P. Kidger, "On Neural Differential Equations", DPhil thesis, University of Oxford, 2021
    (and the diffrax library).
"""
from genjax.samplers.ddim import sample_ddim
from genjax.samplers.edm_heun import sample_edm_heun
from genjax.samplers.likelihood import (
    DIVERGENCES,
    PROBES,
    LikelihoodResult,
    draw_probes,
    log_likelihood,
)
from genjax.samplers.predictor_corrector import (
    CORRECTORS,
    PREDICTORS,
    STEP_SIZES,
    ancestral_posterior,
    sample_predictor_corrector,
    transition_coefficients,
)
from genjax.samplers.prior import example_keys, noise_key, prior_key, sample_prior
from genjax.samplers.probability_flow import (
    SOLVERS,
    evaluations_per_solve,
    sample_probability_flow,
    solve_probability_flow,
)
from genjax.samplers.result import SampleResult
from genjax.samplers.reverse_sde import sample_reverse_sde

__all__ = [
    "CORRECTORS",
    "DIVERGENCES",
    "PREDICTORS",
    "STEP_SIZES",
    "ancestral_posterior",
    "sample_ddim",
    "sample_edm_heun",
    "sample_predictor_corrector",
    "transition_coefficients",
    "LikelihoodResult",
    "PROBES",
    "SOLVERS",
    "SampleResult",
    "draw_probes",
    "evaluations_per_solve",
    "example_keys",
    "log_likelihood",
    "noise_key",
    "prior_key",
    "sample_prior",
    "sample_probability_flow",
    "sample_reverse_sde",
    "solve_probability_flow",
]
