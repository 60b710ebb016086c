"""Draw sample sets from a trained model (EMA weights) and write them with a picture."""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from genjax import factory
from genjax.evaluate.plots import save_samples_figure
from genjax.experiment import Experiment, derive_key


def local_copy(params):
    """The parameters on this process's first device: sample sets are drawn there."""
    return jax.device_put(params, jax.local_devices()[0])


def draw(experiment: Experiment, params, sampler_name: str, num_samples: int) -> dict:
    """num_samples draws with the named sampler; returns samples, per-example NFE and time.

    Sample i uses fold_in(sample key, i), so a sample set does not depend on how it is split.
    """
    sampler = factory.build_sampler(experiment.config, sampler_name)
    process, shape = experiment.process, experiment.data_shape

    @jax.jit
    def run(params, key):
        return sampler(process, experiment.score_fn(params), key, num_samples, shape)

    key = derive_key(experiment.config.seed, "sample")
    start = time.perf_counter()
    result = jax.block_until_ready(run(local_copy(params), key))
    seconds = time.perf_counter() - start
    nfe = np.asarray(result.nfe)
    return {"samples": np.asarray(result.samples), "nfe": nfe, "seconds": seconds}


def write_sample_set(workdir: str, step: int, sampler_name: str, drawn: dict, reference: np.ndarray) -> tuple[str, str]:
    """`samples/step_<N>_<sampler>.npz` (samples, nfe) and the matching PNG beside the data."""
    directory = os.path.join(workdir, "samples")
    os.makedirs(directory, exist_ok=True)
    stem = os.path.join(directory, f"step_{step}_{sampler_name}")
    np.savez(stem + ".npz", samples=drawn["samples"], nfe=drawn["nfe"])
    title = f"{sampler_name}, step {step}, mean NFE {drawn['nfe'].mean():.1f}"
    save_samples_figure(stem + ".png", reference, drawn["samples"], title=title)
    return stem + ".npz", stem + ".png"
