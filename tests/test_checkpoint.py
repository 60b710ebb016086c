"""Checkpoints: exact round trip, bit-exact resume, restore onto another mesh, and the
failure paths (corrupted files, divergence) that must leave saved work alone."""
import os
import shutil

import jax
import numpy as np
import pytest

from genjax import checkpoint
from genjax.experiment import build_experiment
from genjax.train.loop import TrainingDivergedError, train
from tests.tiny_config import tiny_config


def assert_trees_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def checkpoint_steps(workdir):
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def restore_latest(experiment, workdir):
    manager = checkpoint.open_manager(workdir, max_to_keep=3, save_interval_steps=1, create=False)
    try:
        return checkpoint.restore(manager, experiment.abstract_state())
    finally:
        manager.close()


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """20 steps in one go on 8 devices."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    state = train(build_experiment(tiny_config(num_steps=20), jax.devices()[:8]), workdir)
    return workdir, jax.device_get(state)


def test_round_trip_is_exact(straight_run):
    workdir, final = straight_run
    experiment = build_experiment(tiny_config(num_steps=20), jax.devices()[:8])
    state, meta, step = restore_latest(experiment, workdir)
    assert step == 20 and int(state.step) == 20
    assert meta["data"]["next_step"] == 20 and meta["data"]["name"] == "eight_gaussians"
    assert_trees_equal(state, final)


def test_resume_equals_straight_run_bit_for_bit(straight_run, tmp_path):
    _, final = straight_run
    workdir = str(tmp_path)
    train(build_experiment(tiny_config(num_steps=10), jax.devices()[:8]), workdir)
    assert checkpoint_steps(workdir) == [10]
    resumed = train(build_experiment(tiny_config(num_steps=20), jax.devices()[:8]), workdir)
    assert checkpoint_steps(workdir) == [10, 20]
    assert_trees_equal(jax.device_get(resumed), final)


def test_checkpoint_from_eight_devices_restores_on_one(straight_run):
    workdir, final = straight_run
    experiment = build_experiment(tiny_config(num_steps=20), jax.devices()[:1])
    state, _, _ = restore_latest(experiment, workdir)
    assert all(len(leaf.sharding.device_set) == 1 for leaf in jax.tree.leaves(state))
    assert_trees_equal(state, final)


def test_training_past_the_target_does_nothing(straight_run):
    workdir, final = straight_run
    before = checkpoint_steps(workdir)
    state = train(build_experiment(tiny_config(num_steps=20), jax.devices()[:1]), workdir)
    assert checkpoint_steps(workdir) == before
    assert_trees_equal(jax.device_get(state), final)


def truncate_array_files(step_directory) -> dict[str, int]:
    """Halve every array data file of a checkpoint step; returns {relative path: new size}."""
    sizes = {}
    for root, _, names in os.walk(os.path.join(step_directory, "state")):
        if os.path.basename(root) == "d":
            for name in names:
                path = os.path.join(root, name)
                os.truncate(path, os.path.getsize(path) // 2)
                sizes[os.path.relpath(path, step_directory)] = os.path.getsize(path)
    assert sizes
    return sizes


def test_damaged_newest_checkpoint_is_quarantined_and_the_run_resumes_from_the_previous(straight_run, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(straight_run[0], workdir)
    truncated = truncate_array_files(os.path.join(workdir, "checkpoints", "20"))
    state = train(build_experiment(tiny_config(num_steps=20), jax.devices()[:8]), workdir)
    # Resumed from 10 and saved a fresh 20 beside the quarantined one: the same final state.
    assert checkpoint_steps(workdir) == [10, 20]
    assert_trees_equal(jax.device_get(state), straight_run[1])
    quarantined = os.listdir(os.path.join(workdir, checkpoint.QUARANTINE_SUBDIR))
    assert len(quarantined) == 1 and quarantined[0].startswith("checkpoint_20_")
    for path, size in truncated.items():  # kept as it was, not deleted
        assert os.path.getsize(os.path.join(workdir, checkpoint.QUARANTINE_SUBDIR, quarantined[0], path)) == size


def test_sampling_reads_past_a_damaged_checkpoint_without_moving_it(straight_run, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(straight_run[0], workdir)
    os.remove(os.path.join(workdir, "checkpoints", "20", "state", "_METADATA"))
    experiment = build_experiment(tiny_config(num_steps=20), jax.devices()[:1])
    manager = checkpoint.open_manager(workdir, max_to_keep=3, save_interval_steps=1, create=False)
    restored = checkpoint.restore_newest_intact(manager, experiment.abstract_state(), quarantine=False)
    manager.close()
    assert restored.step == 10 and int(restored.state.step) == 10
    assert "checkpoint 20 is damaged" in restored.report() and "left in place" in restored.report()
    assert checkpoint_steps(workdir) == [10, 20]


def test_a_config_that_fits_no_checkpoint_moves_nothing(straight_run, tmp_path):
    """Every step failing points at the config, not the files: an error, nothing moved."""
    workdir = str(tmp_path / "copy")
    shutil.copytree(straight_run[0], workdir)
    config = tiny_config(num_steps=30)
    config.model.kwargs.hidden_dim = 48
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint.*could be restored.*config"):
        train(build_experiment(config, jax.devices()[:1]), workdir)
    assert checkpoint_steps(workdir) == [10, 20]
    assert not os.path.exists(os.path.join(workdir, checkpoint.QUARANTINE_SUBDIR))


def test_missing_checkpoint_directory_is_reported(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="train first"):
        checkpoint.open_manager(str(tmp_path), max_to_keep=1, save_interval_steps=1, create=False)


def test_divergence_stops_without_touching_saved_checkpoints(straight_run, tmp_path):
    """The straight run resumed on one device with an infinite learning rate."""
    workdir = str(tmp_path / "copy")
    shutil.copytree(straight_run[0], workdir)
    config = tiny_config(num_steps=30)
    config.optimizer.learning_rate = float("inf")
    with pytest.raises(TrainingDivergedError, match="latest checkpoint is step 20"):
        train(build_experiment(config, jax.devices()[:1]), workdir)
    assert checkpoint_steps(workdir) == [10, 20]
    state, _, _ = restore_latest(build_experiment(tiny_config(num_steps=20), jax.devices()[:1]), workdir)
    assert_trees_equal(state, straight_run[1])


def test_resume_with_another_data_stream_is_refused(straight_run, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(straight_run[0], workdir)
    config = tiny_config(num_steps=30)
    config.data.num_train_examples = 2048
    with pytest.raises(checkpoint.CheckpointError, match="different data stream"):
        train(build_experiment(config, jax.devices()[:1]), workdir)


@pytest.mark.slow  # three trainings; test_checkpoint_from_eight_devices_restores_on_one is the fast check
def test_checkpoint_from_eight_devices_continues_identically_on_four_and_one(straight_run, tmp_path):
    """Resuming on 4 or 1 devices gives the same next steps as resuming on the original 8."""
    finals = {}
    for devices in (8, 4, 1):
        workdir = str(tmp_path / f"resume_on_{devices}")
        shutil.copytree(straight_run[0], workdir)
        state = train(build_experiment(tiny_config(num_steps=30), jax.devices()[:devices]), workdir)
        assert int(state.step) == 30
        finals[devices] = jax.device_get(state.params)
    for devices in (4, 1):
        for a, b in zip(jax.tree.leaves(finals[8]), jax.tree.leaves(finals[devices])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
