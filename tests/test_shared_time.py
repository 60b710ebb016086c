"""A network that takes one noise level for the whole batch ([1]) gives the numbers of [B]
copies of it, through every output reading that uses it, and the per-batch probability-flow
solve (which evaluates it at one t) draws the same samples with the same NFE either way."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import factory
from genjax.experiment import build_experiment
from genjax.processes import views
from genjax.samplers import example_keys, sample_prior, solve_probability_flow
from tests.tiny_config import tiny_config

B = 64


def experiment_and_params(output="noise", noise_input="time", num_classes=0):
    config = tiny_config()
    config.model.output, config.model.noise_input, config.model.num_classes = output, noise_input, num_classes
    if num_classes:
        config.data.name = "labelled_points"
    experiment = build_experiment(config, devices=jax.devices()[:1])
    leaves, tree = jax.tree.flatten(experiment.state_shapes.ema_params)
    keys = jax.random.split(jax.random.key(3), len(leaves))  # every leaf nonzero (the output layer starts at 0)
    params = jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)])
    return experiment, params


@pytest.mark.parametrize("output, noise_input, num_classes", [
    ("noise", "time", 0), ("score", "sigma", 0), ("velocity", "time", 0), ("noise", "time", 3)])
def test_shared_time_velocity_is_the_per_example_time_velocity(output, noise_input, num_classes, monkeypatch):
    monkeypatch.setitem(factory.DATASETS, "labelled_points",  # a labelled 2-D set, for the conditional network
                        lambda key, num: {"x": jax.random.normal(key, (num, 2)),
                                          "label": jnp.arange(num, dtype=jnp.int32) % num_classes})
    experiment, params = experiment_and_params(output, noise_input, num_classes)
    model = experiment.model(params)
    assert model.shared_noise_level
    x = jax.random.normal(jax.random.key(0), (B, 2))
    condition = jnp.arange(B, dtype=jnp.int32) % 3 if num_classes else None
    for t in (0.02, 0.5, 1.0):
        shared = jax.jit(views.shared_time_velocity_fn(experiment.process, model))(x, t, condition)
        copies = jax.jit(views.batched_velocity_fn(experiment.process, model))(x, jnp.full((B,), t), condition)
        np.testing.assert_allclose(shared, copies, rtol=1e-6, atol=1e-6 * float(jnp.max(jnp.abs(copies))))


def test_preconditioned_outputs_keep_per_example_times():
    experiment, params = experiment_and_params(output="edm")
    assert not experiment.model(params).shared_noise_level


def test_per_batch_solve_draws_the_same_samples_with_the_shared_time():
    experiment, params = experiment_and_params()
    shared = experiment.model(params)
    per_example_times = dataclasses.replace(shared, shared_noise_level=False)
    x_T = sample_prior(experiment.process, example_keys(jax.random.key(5), B), experiment.data_shape)
    solve = jax.jit(lambda x, model: solve_probability_flow(experiment.process, model, x, solver="dopri5", rtol=1e-5,
                                                            atol=1e-5, step_control="per_batch"), static_argnums=1)
    a, b = solve(x_T, shared), solve(x_T, per_example_times)
    np.testing.assert_array_equal(a.nfe, b.nfe)
    np.testing.assert_allclose(a.samples, b.samples, rtol=0, atol=1e-5)
