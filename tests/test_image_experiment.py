"""Images through the engine: a tiny U-Net trains on the shipped digits through the same loop
as the 2-D sets (stream, checkpoint, resume position), and the evaluation writes a sample
grid and the held-out NLL in bits/dim; the command line does the same (slow)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import digits
from genjax.evaluate.bits_per_dim import LN2
from genjax.evaluate.evaluator import add_bits_per_dim, dequantized_images, evaluate, format_table
from genjax.experiment import build_experiment
from genjax.factory import ConfigError
from genjax.samplers.prior import example_keys
from genjax.train.loop import train
from tests.subprocess_env import cpu_environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_UNET = dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(), dropout=0.1)


def tiny_digits_config(data_dir, num_steps=4):
    config = digits.get_config()
    config.data.data_dir = str(data_dir)
    config.model.kwargs = TINY_UNET
    config.model.num_classes, config.evaluate.guidance = 0, 0.0  # unconditional (guided digits: test_guidance.py)
    config.training.num_steps = num_steps
    config.training.batch_size = 16
    config.training.log_every = config.training.sync_every = 2
    config.training.checkpoint_every = num_steps
    config.optimizer.warmup_steps = 1
    config.evaluate.samplers = "euler_maruyama"
    config.samplers.euler_maruyama.num_steps = 5
    config.evaluate.num_samples = 16
    config.evaluate.nll_num_points = 8
    config.evaluate.likelihood.max_steps = 64
    config.evaluate.likelihood.rtol = config.evaluate.likelihood.atol = 1e-2
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.mark.slow  # a U-Net's train step, sampler and likelihood compile: a minute on 2 cores
def test_digits_train_and_evaluate_write_a_grid_and_bits_per_dim(data_dir, tmp_path):
    experiment = build_experiment(tiny_digits_config(data_dir))
    assert experiment.data_shape == (8, 8, 1)
    stream = experiment.train_stream()
    batch = experiment.global_batch(stream, 0)
    assert set(batch) == {"x"} and batch["x"].shape == (16, 8, 8, 1)  # unconditional: no labels
    state = train(experiment, tmp_path)
    assert int(state.step) == 4
    results = evaluate(experiment, state.ema_params, 4, tmp_path)
    grid = np.asarray(Image.open(tmp_path / results["samplers"]["euler_maruyama"]["figure"]))
    # 16 tiles of 8x8 pixels, 4 columns, one-pixel borders, every pixel drawn 4x4: (4 * 9 + 1) * 4.
    assert grid.shape == ((4 * 9 + 1) * 4,) * 2
    nll = results["likelihood"]
    assert nll["failed_points"] == 0 and nll["num_points"] == 8
    assert nll["bits_per_dim"] == pytest.approx(nll["nll_nats_per_dim"] / LN2 + 7.0)
    assert "bits/dim" in format_table(results)
    # The offline digits measure: an untrained model's samples are far from the real digits' floor.
    floor = results["baselines"]["data_vs_data"]["digits_frechet"]
    assert 0 < floor < results["samplers"]["euler_maruyama"]["digits_frechet"]
    assert len(results["baselines"]["data_vs_data"]["digits_frechet_runs"]) == 5
    assert "digits_class_accuracy" not in results["samplers"]["euler_maruyama"]  # unconditional
    assert (tmp_path / "eval" / "digits_classifier.npz").exists()
    # The untrained model is far from the data but not worse than 8-bit noise by orders of magnitude.
    assert 7.0 < nll["bits_per_dim"] < 20.0


def test_held_out_digits_are_the_test_split_and_labels_follow_a_conditional_model(data_dir):
    config = tiny_digits_config(data_dir)
    config.model.num_classes = 10
    experiment = build_experiment(config)
    held_out = experiment.reference_batch(1000)
    assert held_out["x"].shape == (360, 8, 8, 1) and held_out["label"].shape == (360,)
    assert set(np.unique(held_out["label"])) == set(range(10))
    # Pixels are the 8-bit levels k / 127.5 - 1 of the held-out images.
    levels = (held_out["x"] + 1.0) * 127.5
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-4)
    assert set(experiment.global_batch(experiment.train_stream(), 0)) == {"x", "label"}


@pytest.mark.slow  # three U-Net losses compile (the network-level checks are in tests/test_unets.py)
def test_bf16_compute_and_remat_are_config_options_that_keep_the_loss(data_dir):
    """On one fixed batch and the same float32 parameters: remat gives the same loss to float
    rounding, bf16 compute moves it by about bf16's resolution (not by zero, not by more);
    parameters and the optimizer state stay float32 under bf16."""
    losses = {}
    for name, options in {"f32": {}, "bf16": {"dtype": "bfloat16"}, "remat": {"remat": True}}.items():
        config = tiny_digits_config(data_dir)
        config.model.kwargs = {**TINY_UNET, **options}
        experiment = build_experiment(config)
        if name == "f32":
            state = experiment.init_state()
            # Random weights: the untrained U-Net outputs zero (its closing layers start at 0).
            leaves, tree = jax.tree.flatten(state.params)
            params = jax.tree.unflatten(tree, [leaf + 0.05 * jax.random.normal(jax.random.key(i), leaf.shape)
                                               for i, leaf in enumerate(leaves)])
            batch = experiment.global_batch(experiment.train_stream(), 0)
            keys = example_keys(jax.random.key(3), 16)
        if name == "bf16":
            shapes = experiment.state_shapes
            assert {leaf.dtype for leaf in jax.tree.leaves((shapes.params, shapes.opt_state, shapes.ema_params))
                    if leaf.dtype.kind == "f"} == {np.dtype("float32")}
        losses[name] = float(jax.jit(experiment.loss_fn)(params, batch, keys))
    assert losses["remat"] == pytest.approx(losses["f32"], rel=1e-6)
    assert 1e-5 < abs(losses["bf16"] / losses["f32"] - 1) < 1e-2


def test_value_range_maps_pixels_and_sets_the_bits_per_dim_offset(data_dir):
    config = tiny_digits_config(data_dir)
    config.data.value_range = (0.0, 1.0)  # score_sde's uncentred data (its VE configs)
    experiment = build_experiment(config)
    held_out = experiment.reference_batch(1000)["x"]
    levels = held_out * 255.0  # pixels k / 255
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-4)
    assert held_out.min() == 0.0 and held_out.max() == 1.0
    train_x = experiment.global_batch(experiment.train_stream(), 0)["x"]
    assert 0.0 <= float(train_x.min()) and float(train_x.max()) <= 1.0
    # Dequantised points stay in their own bins [k / 256, (k + 1) / 256) of [0, 1].
    dequantised = dequantized_images(held_out[:20], jax.random.key(0), (0.0, 1.0))
    np.testing.assert_array_equal(np.floor(dequantised * 256.0), np.rint(levels[:20]))
    # The uniform density on the data range [lo, hi]^D is 8 bits/dim of 8-bit data in any range:
    # -log p / D = log(hi - lo) nats, plus the offset log2(256 / (hi - lo)).
    for lo, hi in [(0.0, 1.0), (-1.0, 1.0), (-3.0, 5.0)]:
        nll = {"nll_nats_per_dim": np.log(hi - lo), "nll_standard_error": 0.0, "prior_nll_nats_per_dim": 0.0}
        add_bits_per_dim(nll, (lo, hi))
        assert nll["bits_per_dim"] == pytest.approx(8.0, abs=1e-12)
    config.data.value_range = (1.0, -1.0)
    with pytest.raises(ConfigError, match=r"data.value_range=\(1.0, -1.0\) must be finite with lo < hi"):
        build_experiment(config)


def test_image_config_errors_are_one_line(data_dir):
    config = tiny_digits_config(data_dir)
    config.data.resolution = 0
    with pytest.raises(ConfigError, match=r"data.resolution=0: an image dataset needs the image size"):
        build_experiment(config)
    config = tiny_digits_config(data_dir)
    config.data.channels = 3
    experiment = build_experiment(config)
    with pytest.raises(ConfigError, match=r"data.channels=3: sklearn_digits/1.0.0:train has 1-channel images; "
                                          r"set data.channels=1"):
        experiment.train_stream()


@pytest.mark.slow  # a U-Net training and its evaluation in a fresh process
def test_digits_command_writes_grids_and_an_evaluation(data_dir, tmp_path):
    command = [sys.executable, "-m", "experiments.main", "--config=configs/digits.py", f"--workdir={tmp_path}",
               f"--config.data.data_dir={data_dir}", "--config.training.num_steps=20",
               "--config.evaluate.samplers=euler_maruyama", "--config.evaluate.nll_num_points=16",
               "--config.evaluate.num_samples=64"]
    result = subprocess.run(command, cwd=ROOT, env=cpu_environment(1), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.load(open(tmp_path / "eval" / "step_20.json"))
    assert set(evaluation["samplers"]) == {"euler_maruyama"}
    assert np.isfinite(evaluation["likelihood"]["bits_per_dim"])
    for entry in evaluation["samplers"].values():
        # class-conditional: one row per digit, 6 columns (64 samples hold at least 6 of each)
        assert Image.open(tmp_path / entry["figure"]).size == ((6 * 9 + 1) * 4, (10 * 9 + 1) * 4)
