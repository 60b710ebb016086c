"""experiments/pfgm_trained.py: its one-line flag errors, and (slow) a tiny run whose table has
every model, the reference rows and sane numbers."""
import json
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_bad_flags_are_one_line_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.pfgm_trained", f"--workdir={tmp_path}", "--dims=0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().startswith("error:"), result.stderr[-500:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "pfgm_trained.json").exists()


@pytest.mark.slow
def test_tiny_run_writes_a_sane_table(tmp_path):
    command = [sys.executable, "-m", "experiments.pfgm_trained", f"--workdir={tmp_path}", "--seconds=2", "--dims=8",
               "--num_samples=200", "--nll_points=4", "--heun_steps=2,8", "--alphas=0.1", "--quant_bits=6"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(tmp_path / "pfgm_trained.json"))
    models = results["models"]
    assert list(models) == ["exact score (EDM sampler)", "EDM", "PFGM (D=1)", "PFGM++ D=8"]
    floor = results["noise_floor"]
    for name, row in models.items():
        assert [row["heun"][n]["nfe"] for n in ("2", "8")] == [3, 15]
        assert [row["euler"][n]["nfe"] for n in ("2", "8")] == [2, 8]
        for entry in [*row["heun"].values(), *row["euler"].values(), *row["state_noise"].values()]:
            assert math.isfinite(entry["mmd"]) and entry["mmd"] > -0.01 and 0 <= entry["stray"] <= 1
        assert set(row["state_noise"]) == {"0.1"}
        assert row["nll"]["num_points"] == 4 if "steps" in row else True
        if name != "exact score (EDM sampler)":
            assert row["steps"] >= 10 and row["train_seconds"] > 0 and set(row["quantized"]) == {"6"}
    exact = models["exact score (EDM sampler)"]["heun"]["8"]
    # The exact score at 15 NFE is within a few noise floors of fresh data; 3 NFE is far off, and
    # so are 2 Euler steps.
    oracle = models["exact score (EDM sampler)"]
    assert exact["mmd"] < 5 * abs(floor["mmd"]) + 0.01 < min(oracle["heun"]["2"]["mmd"], oracle["euler"]["2"]["mmd"])
    table = (tmp_path / "pfgm_trained.md").read_text()
    for name in models:
        assert f"| {name} |" in table
