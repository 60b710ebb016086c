"""Draw sample sets from a trained model (EMA weights) on the mesh, and write them.

The sample set is split over the mesh's data-parallel axes with `shard_map`: each device
solves its own examples (per-example `vmap` inside the sampler), so adaptive step control
stays local to a device and no collective runs inside the solve. Example i always uses the
key fold_in(sample key, i) (`first_index` of each device's slice), so a sample set does not
depend on the batch size, the number of devices or the number of processes. The one
exception is a sampler that asks for a statistic of the whole sample set, such as the
predictor-corrector's "snr_batch" Langevin step: it is averaged over the mesh through
`axis_name`, so the set still does not depend on the device count, but it does (weakly) on
its size. Samples are then gathered to every process; process 0 writes them.
"""
from __future__ import annotations

import functools
import inspect
import io
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from genjax import factory, workdir as workdir_lib
from genjax.evaluate.image_grid import save_image_grid
from genjax.evaluate.plots import save_samples_figure
from genjax.experiment import Experiment, derive_key
from genjax.train.parallel import BATCH_AXES, data_parallel_size


class SamplingError(RuntimeError):
    """A solver gave up on some examples; the message says which option to raise."""


def draw(experiment: Experiment, params, sampler_name: str, num_samples: int, model=None,
         condition: np.ndarray | None = None) -> dict:
    """num_samples draws with the named sampler; returns host arrays of samples and
    per-example NFE, and the wall time. Every process must call it (it runs on the mesh).
    `model` maps params to a `views.Model` (default `experiment.model`; a bare per-example
    score is read as a score model, e.g. `lambda _: exact_score` runs the same sampler on an
    oracle). `condition`: the [num_samples] class labels of the samples; for a conditional
    model None means `experiment.default_condition` (class-balanced)."""
    model = experiment.model if model is None else model
    if condition is None:
        condition = experiment.default_condition(num_samples)
    sampler = factory.build_sampler(experiment.config, sampler_name)
    parameters = inspect.signature(sampler.func).parameters
    if "throw" in parameters:
        sampler = functools.partial(sampler, throw=False)  # failures are reported below, not raised on device
    if "axis_name" in parameters:
        sampler = functools.partial(sampler, axis_name=BATCH_AXES)  # batch statistics span the mesh
    process, shape, mesh = experiment.process, experiment.data_shape, experiment.mesh
    per_device = -(-num_samples // data_parallel_size(mesh))

    def draw_local(params, key, *condition):
        first = jax.lax.axis_index(BATCH_AXES) * per_device
        result = sampler(process, model(params), key, per_device, shape, first_index=first,
                         condition=condition[0] if condition else None)
        return result.samples, result.nfe, result.successful

    arguments = [params, derive_key(experiment.config.seed, "sample")]
    in_specs = (P(), P())
    if condition is not None:
        condition = np.asarray(condition, np.int32)
        if condition.shape != (num_samples,):
            raise ValueError(f"condition must hold one label per sample, shape ({num_samples},), got {condition.shape}")
        padded = np.resize(condition, per_device * data_parallel_size(mesh))  # pads by repeating
        arguments.append(jax.make_array_from_callback(padded.shape, jax.sharding.NamedSharding(mesh, P(BATCH_AXES)),
                                                      lambda index: padded[index]))
        in_specs += (P(BATCH_AXES),)
    run = jax.jit(jax.shard_map(draw_local, mesh=mesh, in_specs=in_specs, out_specs=P(BATCH_AXES),
                                check_vma=False))
    start = time.perf_counter()
    outputs = jax.block_until_ready(run(*arguments))
    seconds = time.perf_counter() - start
    samples, nfe, successful = (np.asarray(x)[:num_samples] for x in multihost_utils.process_allgather(outputs, tiled=True))
    if not successful.all():
        raise SamplingError(
            f"{sampler_name}: the solver failed on {int((~successful).sum())} of {num_samples} samples "
            f"(step budget exhausted); raise samplers.{sampler_name}.max_steps or loosen its tolerances"
        )
    return {"samples": samples, "nfe": nfe, "seconds": seconds}


def write_sample_set(workdir, step: int, sampler_name: str, drawn: dict, reference: np.ndarray,
                     data_range: tuple[float, float] = (-1.0, 1.0)) -> tuple[str, str]:
    """`samples/step_<N>_<sampler>.npz` (samples, nfe) and the matching PNG beside the data;
    returns their paths relative to `workdir` (a local path or a URL). `data_range`: the
    image pixels' [lo, hi] (config.data.value_range), for the PNG grid."""
    directory = workdir_lib.resolve(workdir) / "samples"
    stem = f"step_{step}_{sampler_name}"
    buffer = io.BytesIO()
    np.savez(buffer, samples=drawn["samples"], nfe=drawn["nfe"])
    workdir_lib.write_bytes(directory / f"{stem}.npz", buffer.getvalue())
    if drawn["samples"].ndim == 4:  # images [n, H, W, C]: a grid, each pixel at least 1/32 of a 256-pixel tile
        height = drawn["samples"].shape[1]
        save_image_grid(directory / f"{stem}.png", drawn["samples"][:256], scale=max(1, 32 // height),
                        data_range=data_range)
    else:
        title = f"{sampler_name}, step {step}, mean NFE {drawn['nfe'].mean():.1f}"
        save_samples_figure(directory / f"{stem}.png", reference, drawn["samples"], title=title)
    return f"samples/{stem}.npz", f"samples/{stem}.png"
