"""configs/cnf.py through the engine: the registered CNF objective and the evaluation's NLL are
two independent codes for the same -log p(x) (objectives/maximum_likelihood.py solves the
augmented ODE with gradients; samplers/likelihood.py is the evaluator's), so on the same
points and weights they agree; and a short training moves the held-out NLL towards the
data's entropy."""
import jax
import numpy as np
import pytest

from configs import cnf
from genjax.evaluate.likelihood import negative_log_likelihood
from genjax.experiment import build_experiment
from genjax.train.loop import train
from genjax.samplers.prior import example_keys

TIGHT = dict(divergence="exact", solver="dopri5", rtol=1e-6, atol=1e-6, max_steps=4096)
ENTROPY_NATS_PER_DIM = 2.8316 / 2  # eight_gaussians (docs/cnf_toy)


def cnf_experiment(**training):
    config = cnf.get_config()
    config.objective.kwargs.update(solver="dopri5", rtol=1e-6, atol=1e-6, max_steps=4096)
    for name, value in training.items():
        config.training[name] = value
    return build_experiment(config, jax.devices()[:1])


def test_training_loss_is_the_evaluated_nll_of_the_same_flow():
    experiment = cnf_experiment()
    # Weights scaled up from their initialisation: a strongly non-linear flow, so that the
    # divergence integral is a large part of log p (checked below).
    params = jax.tree.map(lambda p: 2.0 * p, experiment.init_state().params)
    points = experiment.reference_data(64)
    loss = experiment.loss_fn(params, points, example_keys(jax.random.key(0), len(points)))
    nll = negative_log_likelihood(experiment, params, points, TIGHT)
    assert nll["failed_points"] == 0
    # loss: mean -log p per example (nats); the evaluation: nats per dimension.
    np.testing.assert_allclose(float(loss) / 2, nll["nll_nats_per_dim"], rtol=1e-5, atol=2e-4)
    prior_nll = -float(jax.vmap(experiment.process.prior_log_prob)(points).mean()) / 2
    assert abs(nll["nll_nats_per_dim"] - prior_nll) > 0.3, (nll, prior_nll)  # the flow's part is large


@pytest.mark.slow  # 300 training steps
def test_a_short_training_approaches_the_entropy(tmp_path):
    experiment = cnf_experiment(num_steps=300, checkpoint_every=300, log_every=100)
    config = experiment.config
    config.objective.kwargs.update(solver="rk4", num_steps=8)
    experiment = build_experiment(config, jax.devices()[:1])
    held_out = experiment.reference_data(500)
    before = negative_log_likelihood(experiment, experiment.init_state().params, held_out, TIGHT)
    state = train(experiment, str(tmp_path))
    after = negative_log_likelihood(experiment, state.params, held_out, TIGHT)
    assert after["nll_nats_per_dim"] < before["nll_nats_per_dim"] - 0.3
    assert after["nll_nats_per_dim"] < ENTROPY_NATS_PER_DIM + 0.25
