"""An objective's own metrics (loss_fn -> (loss, metrics)) reach the train step's metrics,
averaged over micro-batches like the loss, and the engine's logs; the CNF's logged forward and
backward NFE equal the field evaluations counted during the step."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import cnf
from genjax.experiment import build_experiment
from genjax.objectives.maximum_likelihood import cnf_loss_and_metrics
from genjax.train.loop import train
from genjax.train.state import create_train_state
from genjax.train.step import train_step
from tests.counting import counting

BATCH = {"x": jnp.arange(8.0).reshape(8, 1)}


def _state(params):
    return create_train_state(params, optax.sgd(0.1), jax.random.key_data(jax.random.key(0)))


def _step(loss_fn, params, batch, grad_accum_steps=1):
    return train_step(_state(params), batch, loss_fn=loss_fn, optimizer=optax.sgd(0.1), ema_decay=0.9,
                      grad_accum_steps=grad_accum_steps)


@pytest.mark.parametrize("grad_accum_steps", [1, 2, 4])
def test_objective_metrics_are_batch_means_like_the_loss(grad_accum_steps):
    def loss_fn(w, batch, keys):
        x = batch["x"][:, 0]
        return jnp.mean((w * x) ** 2), {"mean_x": jnp.mean(x), "max_x": jnp.max(x)}

    _, metrics = _step(loss_fn, jnp.float32(0.5), BATCH, grad_accum_steps)
    assert float(metrics["mean_x"]) == pytest.approx(3.5)  # mean of 0..7, whatever the micro-batching
    assert float(metrics["loss"]) == pytest.approx(0.25 * np.mean(np.arange(8.0) ** 2))
    # A micro-batch's max averaged over micro-batches (rows a, a + A, ...): not the batch max.
    assert float(metrics["max_x"]) == pytest.approx(np.mean(np.arange(8 - grad_accum_steps, 8)))


def test_a_scalar_loss_gives_the_step_metrics_only():
    _, metrics = _step(lambda w, batch, keys: jnp.mean(w * batch["x"]), jnp.float32(1.0), BATCH)
    assert set(metrics) == {"loss", "grad_norm", "nonfinite_inputs"}


class _Prior:
    t_max = 1.0

    @staticmethod
    def prior_log_prob(z):
        return jnp.sum(jax.scipy.stats.norm.logpdf(z))


@pytest.mark.parametrize("adjoint, solver, backward_passes", [
    ("recursive_checkpoint", "rk4", 2),  # each evaluation recomputed from its checkpoint, then linearised
    ("recursive_checkpoint", "dopri5", 2),
    ("backsolve", "rk4", 1),  # one vjp per stage of the adjoint solve
])
def test_cnf_step_reports_counted_forward_and_backward_nfe(adjoint, solver, backward_passes):
    """With Hutchinson's estimator each evaluation of the augmented field runs v once, so the
    counter sees nfe_forward calls in the forward solve and backward_passes * nfe_backward more
    in the gradient's backward pass (one example: no vmap batching of the callback)."""
    velocity, count = counting(lambda y, t: jnp.tanh(1.5 * y) + t)
    params = jnp.float32(1.0)

    def loss_fn(w, batch, keys):
        return cnf_loss_and_metrics(lambda y, t: w * velocity(y, t), _Prior, batch["x"], keys, solver=solver,
                                    num_steps=4, divergence="hutchinson", adjoint=adjoint)

    _, metrics = jax.jit(lambda p, b: _step(loss_fn, p, b))(params, {"x": jnp.array([[0.3, -0.2]])})
    jax.block_until_ready(metrics)
    nfe_forward, nfe_backward = float(metrics["nfe_forward"]), float(metrics["nfe_backward"])
    assert nfe_forward > 0 and nfe_backward > 0
    assert count[0] == nfe_forward + backward_passes * nfe_backward


def test_backsolve_with_an_adaptive_solver_reports_no_backward_nfe():
    x = jnp.array([[0.3, -0.2]])
    _, metrics = cnf_loss_and_metrics(lambda y, t: -y, _Prior, x, jax.random.split(jax.random.key(0), 1),
                                      solver="dopri5", adjoint="backsolve")
    assert "nfe_backward" not in metrics and float(metrics["nfe_forward"]) > 0


def test_the_cnf_run_logs_its_nfe_beside_the_loss(tmp_path):
    config = cnf.get_config()
    config.objective.kwargs.update(solver="rk4", num_steps=3)
    config.model.kwargs.hidden_dims = (16,)  # the counts do not depend on the network; its compile does
    config.data.num_train_examples = 256
    config.training.update(num_steps=2, log_every=1, checkpoint_every=2, batch_size=16)
    experiment = build_experiment(config, jax.devices()[:1])
    train(experiment, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert record["nfe_forward"] == record["nfe_backward"] == 12  # rk4: 4 stages x 3 steps
        assert np.isfinite(record["nll"]) and record["failed_solves"] == 0
