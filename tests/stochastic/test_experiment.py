"""The study entrypoint end to end: figures, a table whose every row passes, and clear bad-input errors."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The convergence study keeps its default 1000 paths: with fewer, Euler-Maruyama's weak-order
# window is wider than +- 1/4 and the claim fails, as it should.
TINY = ["--num_paths=2000", "--walk_steps=50", "--num_steps=100", "--backward_paths=500"]


def run_studies(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "experiments.stochastic_calculus", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def check_outputs(workdir, studies):
    for study in studies:
        figure = os.path.join(workdir, f"{study}.png")
        assert os.path.getsize(figure) < 200_000, figure
    with open(os.path.join(workdir, "results.json")) as handle:
        rows = json.load(handle)["rows"]
    assert {row["study"] for row in rows} == set(studies)
    failed = [row["claim"] for row in rows if not row["passed"]]
    assert not failed, failed
    with open(os.path.join(workdir, "results.md")) as handle:
        table = handle.read()
    assert table.count("| pass |") == len(rows)


def test_entrypoint_runs_cheap_studies(tmp_path):
    studies = ["markov"]
    result = run_studies(f"--workdir={tmp_path}", f"--studies={','.join(studies)}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    check_outputs(str(tmp_path), studies)


@pytest.mark.slow
def test_entrypoint_runs_every_study_at_tiny_sizes(tmp_path):
    result = run_studies(f"--workdir={tmp_path}", *TINY, timeout=1200)  # minutes on a loaded 2-core machine
    assert result.returncode == 0, result.stderr[-3000:]
    studies = ["random_walk", "brownian", "sde_convergence", "ito", "fokker_planck", "markov", "backward_kolmogorov", "time_reversal"]
    check_outputs(str(tmp_path), studies)


def test_unknown_study_is_one_clear_line(tmp_path):
    result = run_studies(f"--workdir={tmp_path}", "--studies=ito,levy_flights")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "levy_flights" in errors[0] and "time_reversal" in errors[0] and "random_walk" in errors[0]


def test_invalid_size_is_one_clear_line(tmp_path):
    result = run_studies(f"--workdir={tmp_path}", "--studies=markov", "--num_paths=1001")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--num_paths" in errors[0]


def test_unwritable_workdir_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_studies(f"--workdir={blocker / 'sub'}", "--studies=markov")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--workdir" in errors[0]
