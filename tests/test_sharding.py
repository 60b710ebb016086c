"""The train step on a mesh of 8 simulated devices: intended shardings in and out, and the
same loss trajectory as on one device."""
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from genjax.experiment import build_experiment
from genjax.factory import ConfigError
from genjax.train import parallel
from tests.tiny_config import tiny_config

NUM_STEPS = 6


def run_steps(num_devices: int):
    experiment = build_experiment(tiny_config(), jax.devices()[:num_devices])
    step = experiment.jitted_train_step()
    stream = experiment.train_stream()
    state = experiment.init_state()
    losses, batches = [], []
    for i in range(NUM_STEPS):
        batch = experiment.global_batch(stream.local_batch(i))
        batches.append(batch)
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return experiment, state, metrics, batches, np.array(losses)


@pytest.fixture(scope="module")
def one_and_eight():
    assert len(jax.devices()) >= 8, "tests/conftest.py should provide 8 simulated CPU devices"
    return run_steps(1), run_steps(8)


def test_batch_is_split_over_the_data_axis(one_and_eight):
    _, (experiment, _, _, batches, _) = one_and_eight
    batch = batches[0]
    assert experiment.mesh.shape == {"data": 8}
    assert batch.sharding == NamedSharding(experiment.mesh, P("data"))
    shards = batch.addressable_shards
    assert len(shards) == 8 and all(s.data.shape == (64 // 8, 2) for s in shards)


def test_state_in_and_out_has_the_rule_shardings(one_and_eight):
    _, (experiment, state, metrics, _, _) = one_and_eight
    replicated = NamedSharding(experiment.mesh, P())
    for leaf in jax.tree.leaves(state):
        assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
        assert len(leaf.sharding.device_set) == 8
    for leaf in jax.tree.leaves(experiment.state_shardings):
        assert leaf == replicated
    assert metrics["loss"].sharding.is_equivalent_to(replicated, 0)


def test_loss_trajectory_matches_one_device(one_and_eight):
    (_, state_1, _, _, losses_1), (_, state_8, _, _, losses_8) = one_and_eight
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(state_1.params), jax.tree.leaves(state_8.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert losses_1[0] != losses_1[-1]  # the trajectory moves, so the comparison means something


def test_mesh_shape_resolution():
    assert parallel.resolve_mesh_shape({"data": -1}, 8) == {"data": 8}
    assert parallel.resolve_mesh_shape({"data": 4}, 4) == {"data": 4}
    with pytest.raises(ValueError, match="needs 4 devices"):
        parallel.resolve_mesh_shape({"data": 4}, 8)
    with pytest.raises(ValueError, match="valid axes"):
        parallel.resolve_mesh_shape({"model": 2}, 8)


def test_batch_that_does_not_divide_the_devices_is_rejected():
    config = tiny_config(batch_size=60)
    with pytest.raises(ConfigError, match="multiple of 8"):
        build_experiment(config, jax.devices()[:8])
