"""The benchmark's pieces on tiny inputs: the memory rows match the state's shard shapes for
every layout, the table quotes medians of per-repeat ratios, and bad options end in one line.
(Timings themselves are never asserted; `python -m experiments.benchmark` measures them.)"""
import math
import os
import subprocess
import sys

import jax
import pytest

from experiments import benchmark
from experiments.benchmark_memory import memory_rows
from tests.tiny_config import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def rows():
    config = tiny_config()
    config.sharding.fsdp_min_size = 256
    return memory_rows(config, [1, 4])


@pytest.mark.slow
def test_memory_rows_cover_every_layout(rows):
    assert [(r["layout"], r["devices"], tuple(r["mesh"].values())) for r in rows] == [
        ("data parallel", 1, (1, 1, 1)), ("data parallel", 4, (4, 1, 1)),
        ("FSDP", 1, (1, 1, 1)), ("FSDP", 4, (1, 4, 1)), ("FSDP x tensor 2", 4, (1, 2, 2))]
    assert all(r["measured_peak_bytes"] is None for r in rows)  # XLA:CPU keeps no statistics


@pytest.mark.slow
def test_memory_rows_match_the_shard_shapes(rows):
    from genjax.experiment import build_experiment
    # Parameter bytes of the tiny MLP: leaves of >= 256 elements (its 32-wide kernels, which
    # every layout splits 4 ways on 4 devices) and the rest (input/output kernels, biases).
    small = large = 0
    for leaf in jax.tree.leaves(build_experiment(tiny_config(), jax.devices()[:1]).abstract_state().params):
        if math.prod(leaf.shape) >= 256:
            large += math.prod(leaf.shape) * 4
        else:
            small += math.prod(leaf.shape) * 4
    # State = parameters + EMA + Adam's two moments, plus a few replicated scalars (step, counts, key).
    scalars = rows[0]["state_bytes_per_device"] - 4 * (small + large)
    assert 0 < scalars <= 64
    assert rows[1]["state_bytes_per_device"] == rows[0]["state_bytes_per_device"]  # data parallel: no saving
    assert rows[3]["state_bytes_per_device"] == 4 * (small + large // 4) + scalars  # FSDP on 4
    assert rows[4]["state_bytes_per_device"] == rows[3]["state_bytes_per_device"]  # FSDP 2 x tensor 2
    for r in rows:  # XLA's arguments hold the state and a batch shard; the state is donated
        assert r["argument_bytes"] >= r["state_bytes_per_device"]
        assert abs(r["alias_bytes"] - r["state_bytes_per_device"]) <= 64


def test_table_quotes_the_median_of_per_repeat_ratios():
    loop, sharded, plain = [100.0, 50.0, 90.0], [100.0, 100.0, 60.0], [200.0, 100.0, 50.0]
    results = {
        "machine": {"date": "2026-01-01", "device": "1 x cpu", "cpu_count": 2, "repeats": 3, "note": "shared"},
        "train_loop": {"steps": 10, "repeats": 3, "loop": benchmark.summary(loop),
                       "sharded": benchmark.summary(sharded), "plain": benchmark.summary(plain),
                       "loop_over_sharded": benchmark.ratios(loop, sharded),
                       "sharded_over_plain": benchmark.ratios(sharded, plain)},
    }
    table = benchmark.markdown(results)
    # Per repeat: loop/sharded = 1.0, 0.5, 1.5 -> 1.00 (the ratio of medians would be 90/100 = 0.90).
    assert "/ bare sharded jitted step | 1.00 | 1.00, 0.50, 1.50 |" in table
    assert "plain `jax.jit` of the same step | 1.00 | 0.50, 1.00, 1.20 |" in table
    assert "| 90 steps/s | 100, 50, 90 (10 steps each) |" in table
    assert "1 x cpu (2 CPU cores; shared)" in table


def test_unknown_part_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.benchmark", f"--workdir={tmp_path}", "--parts=speed"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --parts: ['speed'] are not known; valid parts: default_run, train_loop, flops, unet_flops, memory")
    assert len([line for line in result.stderr.splitlines() if line.startswith("error")]) == 1
    assert os.listdir(tmp_path) == []
