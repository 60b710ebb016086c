"""Training objectives: they combine a process and a model into a scalar loss."""
from genjax.objectives.flow_matching import conditional_flow_matching_loss
from genjax.objectives.score_matching import (
    denoising_score_matching_loss,
    likelihood_proposal_normaliser,
    sample_likelihood_proposal_time,
)
from genjax.objectives.sliced_score_matching import sliced_score_matching_loss

__all__ = [
    "conditional_flow_matching_loss",
    "denoising_score_matching_loss",
    "likelihood_proposal_normaliser",
    "sample_likelihood_proposal_time",
    "sliced_score_matching_loss",
]
