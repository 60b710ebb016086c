"""Negative log-likelihood of held-out data under a trained model, on the mesh.

The data points are taken in chunks (`evaluate.nll_chunk_size`), each split over the mesh's
data-parallel axes with `shard_map`, and each device solves the probability-flow ODE with the instantaneous change of variables for its
own points (`genjax.samplers.likelihood.log_likelihood`). Point i uses the probes of global
index i, so the numbers do not depend on the device count. Reported in nats per dimension
(continuous low-dimensional data); image data converts with `genjax.evaluate.bits_per_dim`.

With step_control="per_batch" each device's local points are ONE solve (one step-size
sequence), so the values depend on the device count and a failure fails every point of
that device; "per_example" (the default) solves each point on its own.

Failed solves (max_steps reached, step size collapsed) are counted, never dropped: if any
point's solve fails, the NLL and its standard error are NaN and `failed_points` says how
many. A mean over the points that did converge would be optimistic, since the failures are
the points where the flow is hardest to integrate.

The result records what was computed: `t0` (the density is log p_t0, module docstring of
`genjax.samplers.likelihood`) and `divergence` ("exact" or "hutchinson", what "auto" chose).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from genjax.evaluate.bits_per_dim import nats_per_dim
from genjax.evaluate.sampling import chunk_capacity, gather_leaf, parameter_shardings
from genjax.experiment import Experiment, derive_key
from genjax.samplers.likelihood import log_likelihood, resolve_divergence
from genjax.train.parallel import BATCH_AXES, data_parallel_size


def negative_log_likelihood(experiment: Experiment, params, data: np.ndarray, options: dict,
                            model=None, condition: np.ndarray | None = None, chunk_size: int | None = None) -> dict:
    """NLL of `data` [N, *shape] in nats/dim (mean and standard error over points), with NFE
    and the number of failed solves (NLL = NaN if there are any; module docstring).

    `options` are keyword arguments of `log_likelihood` (divergence, probe, num_probes,
    solver, rtol, atol, max_steps, step_control, error_norm, t0). `model` maps params to a `views.Model` (default
    `experiment.model`; a bare per-example score is read as a score model). `condition`: None,
    or the [N] class labels of the points (log p(x | label)). `chunk_size`: points per solve
    call (config.evaluate.nll_chunk_size when None; 0: all at once); one program is compiled
    and called per chunk, with the parameters in their trained sharding gathered on the
    device, as sample chunks are (genjax.evaluate.sampling). Every process must call it; all
    get the result.
    """
    model = experiment.model if model is None else model
    mesh = experiment.mesh
    num = len(data)
    if chunk_size is None:
        chunk_size = experiment.config.evaluate.nll_chunk_size
    chunk = chunk_capacity(experiment, num, chunk_size)
    per_device = chunk // data_parallel_size(mesh)
    process = experiment.process
    specs = jax.tree.map(lambda s: s.spec, parameter_shardings(experiment, params))
    if condition is not None:
        condition = np.asarray(condition, np.int32)
        if condition.shape != (num,):
            raise ValueError(f"condition must hold one label per point, shape ({num},), got {condition.shape}")

    def padded(array, start):
        rows = array[start:start + chunk]
        return np.concatenate([rows, np.repeat(rows[-1:], chunk - len(rows), axis=0)])

    def sharded(array):
        return jax.make_array_from_callback(array.shape, jax.sharding.NamedSharding(mesh, P(BATCH_AXES)),
                                            lambda index: array[index])

    def local(params, x, key, start, *condition):
        params = jax.tree.map(gather_leaf, params, specs)
        first = start + jax.lax.axis_index(BATCH_AXES) * per_device
        result = log_likelihood(process, model(params), x, key, first_index=first, throw=False,
                                condition=condition[0] if condition else None, **options)
        return result.log_prob, result.nfe, result.successful

    in_specs = (specs, P(BATCH_AXES), P(), P()) + ((P(BATCH_AXES),) if condition is not None else ())
    run = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(BATCH_AXES), check_vma=False))
    key = derive_key(experiment.config.seed, "metrics")
    pieces = []
    start_time = time.perf_counter()
    for start in range(0, num, chunk):
        arguments = [params, sharded(padded(data, start)), key, jnp.int32(start)]
        if condition is not None:
            arguments.append(sharded(padded(condition, start)))
        outputs = jax.block_until_ready(run(*arguments))
        pieces.append([np.asarray(v)[:min(chunk, num - start)]
                       for v in multihost_utils.process_allgather(outputs, tiled=True)])
    seconds = time.perf_counter() - start_time
    log_prob, nfe, successful = (np.concatenate(parts) for parts in zip(*pieces))
    num_dims = int(np.prod(data.shape[1:]))
    failed = int((~successful).sum())
    if failed:
        mean = standard_error = float("nan")
    else:
        mean, standard_error = nats_per_dim(jnp.asarray(log_prob), num_dims)
    return {
        "nll_nats_per_dim": float(mean),
        "nll_standard_error": float(standard_error),
        "num_points": num,
        "failed_points": failed,
        "nfe_mean": float(nfe.mean()),
        "t0": float(process.t_min_sample if options.get("t0") is None else options["t0"]),
        "divergence": resolve_divergence(options.get("divergence", "exact"), tuple(data.shape[1:])),
        "seconds": seconds,
    }
