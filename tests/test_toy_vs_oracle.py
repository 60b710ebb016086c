"""experiments/toy_vs_oracle.py: trained model and exact score side by side, end to end."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from genjax import factory
from genjax.data import toy
from genjax.processes import VPSDE
from tests.tiny_config import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_CHECKERBOARD = '''
from tests.tiny_config import tiny_config

def get_config():
    config = tiny_config(num_steps=40)
    config.data.name = "checkerboard"
    config.evaluate.num_samples = 400
    config.evaluate.nll_num_points = 40
    config.evaluate.likelihood.rtol = 1e-3
    config.evaluate.likelihood.atol = 1e-3
    return config
'''


@pytest.mark.slow  # every toy config x process
def test_build_oracle_is_the_exact_score_of_the_configured_data():
    """The factory's oracle for checkerboard and gaussian_mixture agrees with Tweedie on
    data: at small t the exact score's denoised estimate returns the clean point inside a
    checkerboard square; and a dataset without an oracle is a ConfigError naming those with one."""
    process = VPSDE()
    config = tiny_config()
    config.data.name = "checkerboard"
    score, log_prob = factory.build_oracle(config, process)
    x0 = np.asarray(toy.checkerboard(jax.random.key(0), 64))
    t = np.float32(1e-3)
    alpha, sigma = (float(c) for c in process.marginal_coefficients(t))
    interior = np.all(np.abs(np.mod(x0, 2.0) - 1.0) < 0.9, axis=1)  # away from the square edges
    denoised = (alpha * x0 + sigma**2 * np.asarray(jax.vmap(score, in_axes=(0, None))(alpha * x0, t))) / alpha
    np.testing.assert_allclose(denoised[interior], x0[interior], atol=1e-3)
    assert np.all(np.isfinite(np.asarray(jax.vmap(log_prob, in_axes=(0, None))(x0, t))))
    config.data.name = "gaussian_mixture"
    score, _ = factory.build_oracle(config, process)
    mixture = toy.gaussian_mixture_oracle()
    x = np.asarray(mixture.sample(jax.random.key(1), 8))
    alpha, sigma = process.marginal_coefficients(jax.numpy.float32(0.3))
    np.testing.assert_allclose(jax.vmap(score, in_axes=(0, None))(x, 0.3),
                               jax.vmap(mixture.perturbed(alpha, sigma).score)(x), rtol=1e-5, atol=1e-6)
    config.data.name = "two_moons"
    with pytest.raises(factory.ConfigError, match="no exact oracle.*checkerboard"):
        factory.build_oracle(config, process)


@pytest.mark.slow
def test_toy_vs_oracle_runs_end_to_end(tmp_path):
    config_path = tmp_path / "tiny_checkerboard.py"
    config_path.write_text(TINY_CHECKERBOARD)
    command = [sys.executable, "-m", "experiments.toy_vs_oracle", f"--workdir={tmp_path / 'runs'}",
               f"--configs={config_path}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(tmp_path / "runs" / "toy_vs_oracle.json"))["tiny_checkerboard"]
    assert results["trained_steps"] == 40 and results["train_seconds"] > 0
    for sampler in ("euler_maruyama", "probability_flow"):
        row = results["samplers"][sampler]
        # The exact score reaches the data; a 40-step network does not get close.
        assert row["exact"]["mmd"] < 0.01 < row["model"]["mmd"]
    nll = results["likelihood"]
    # The exact score through the ODE recovers the analytic -log p_t0 (within the ODE
    # tolerance and the prior mismatch), which is just above the true log(32) / 2.
    assert abs(nll["exact_score"] - nll["analytic_t0"]) < 0.01
    assert 0 <= nll["analytic_t0"] - nll["true_t0"] < 0.01
    assert nll["model"] > nll["exact_score"]
    # A second call finds the run finished, keeps its recorded training time and rewrites the table.
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.load(open(tmp_path / "runs" / "toy_vs_oracle.json"))["tiny_checkerboard"]
    assert rerun["train_seconds"] == results["train_seconds"]
    assert (tmp_path / "runs" / "toy_vs_oracle.md").read_text().startswith("# Trained toy models")


def test_missing_config_file_is_a_clear_error(tmp_path):
    command = [sys.executable, "-m", "experiments.toy_vs_oracle", f"--workdir={tmp_path}",
               f"--configs={tmp_path / 'nope.py'}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "config file(s) not found" in result.stderr
