"""The evaluations a drawn set spent: summed over its chunks and each device's share of them
(share size x max NFE of the share), checked against a score that counts its own calls."""
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.evaluate.sampling import draw
from genjax.experiment import build_experiment
from tests.tiny_config import tiny_config

NUM = 50  # not a multiple of the chunks below: the last chunk is partial


def counted_score():
    """A nonlinear per-example score (so adaptive steps differ between examples) whose every
    evaluation, of every example, bumps a counter; callbacks arrive from each device's thread."""
    count, lock = [0], threading.Lock()

    def bump(x):  # x: one example (the callback's batching rule calls it once per example)
        with lock:
            count[0] += 1

    def score(x, t):
        jax.debug.callback(bump, x)
        return -x + 2.0 * jnp.sin(3.0 * x) * jnp.exp(-t)

    return score, count


@pytest.mark.parametrize("devices, chunk_size, step_control", [
    (8, 16, "per_example"),  # 2 examples per device, 4 chunks, the last one half surplus
    (2, 0, "per_example"),  # one chunk of 25 examples per device
    (4, 24, "per_batch"),  # every example of a share has the share's NFE
])
def test_spent_nfe_is_the_counted_evaluations_of_every_share(devices, chunk_size, step_control):
    config = tiny_config()
    config.samplers.probability_flow.update(solver="dopri5", rtol=1e-4, atol=1e-4, step_control=step_control)
    experiment = build_experiment(config, devices=jax.devices()[:devices])
    params = jax.tree.map(jnp.zeros_like, experiment.state_shapes.ema_params)
    score, count = counted_score()
    drawn = draw(experiment, params, "probability_flow", NUM, model=lambda _: score, chunk_size=chunk_size)
    assert drawn["spent_nfe"] == count[0]
    # Lock-step waste shows: the set cost more than its examples' own NFE.
    assert drawn["spent_nfe"] > int(np.sum(drawn["nfe"]))


def test_parts_sample_file_and_progress_carry_the_spent_evaluations(tmp_path, caplog):
    """Each saved part keeps its chunk's spent_nfe; the assembled set sums them (also across
    runs); the sample file stores the sum; the progress line gives mean, max and spent per sample."""
    from genjax.evaluate import resumable
    from genjax.evaluate.sampling import Chunk, Progress, write_sample_set

    chunks = [Chunk(0, 4, np.zeros((4, 2), np.float32), np.array([5, 7, 6, 5], np.int32), 1.0, 4 * 7 + 4 * 9),
              Chunk(4, 6, np.ones((2, 2), np.float32), np.array([11, 3], np.int32), 1.0, 4 * 11)]
    directory = tmp_path / "parts"
    directory.mkdir()
    progress = Progress("probability_flow", 6)
    with caplog.at_level("INFO", logger="genjax"):
        for chunk in chunks:
            resumable._write_part(directory, chunk)
            progress.update(chunk)
    assert caplog.records[-1].getMessage().endswith("mean NFE 6.2, max NFE 11, spent NFE 18.0 per sample")
    drawn = resumable.assemble(directory, 6)
    assert drawn["spent_nfe"] == 108
    np.testing.assert_array_equal(drawn["nfe"], [5, 7, 6, 5, 11, 3])
    npz, _ = write_sample_set(tmp_path, 3, "probability_flow", drawn, np.zeros((8, 2), np.float32))
    with np.load(tmp_path / npz) as saved:
        assert int(saved["spent_nfe"]) == 108
