"""The oracle study runs end to end at small sizes and its numbers mean what they say."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_oracle_study_runs_and_reaches_the_noise_floor(tmp_path):
    command = [sys.executable, "-m", "experiments.diffusion_oracle", f"--workdir={tmp_path}", "--processes=vp",
               "--num_samples=1000", "--num_points=50", "--num_probes=4"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(tmp_path / "oracle.json"))["vp"]
    floor, *samplers = results["samplers"]
    best = min(samplers, key=lambda row: row["mmd"])
    assert best["mmd"] < floor["mmd"] + 4 * floor["mmd_sd"]  # the best setting is at the data's noise floor
    worst = max(samplers, key=lambda row: row["mmd"])
    assert worst["nfe"] < best["nfe"]  # and the error falls with NFE
    exact_prior, exact_terminal, hutchinson = results["likelihood"]
    assert exact_terminal["max_abs_error_per_dim"] < 0.01
    assert abs(hutchinson["mean_error_in_standard_errors"]) < 4
    assert (tmp_path / "oracle.md").read_text().startswith("# Samplers and likelihood")
