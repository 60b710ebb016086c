"""Draw sample sets from a trained model (EMA weights) on the mesh, chunk by chunk, and write them.

A set of N samples is drawn in chunks of `config.sampling.chunk_size` global samples (0: the
whole set in one chunk). Each chunk is one call of one compiled program (`compile_chunk`):
the chunk's first global index is a traced argument, and the last, partial chunk runs at full
size with its surplus examples discarded, so nothing recompiles. Inside the program the chunk
is split over the mesh's data-parallel axes with `shard_map`: each device solves its own
`chunk / devices` examples (per-example `vmap` inside the sampler), so adaptive step control
stays local to a device and no collective runs inside the solve.

Keys: example i always uses fold_in(sample key, i) (the sampler's `first_index` is the
chunk's start plus the device's offset), and its class label is `condition[i]`, so sample i
does not depend on the chunk size, the number of devices or the number of processes. With
equal per-device batch shapes it is bit for bit the same; with other shapes XLA may pick
other kernels and it agrees to float rounding (an adaptive solve can turn that into
differences of the order of its tolerance). The one exception is a sampler that asks for a
statistic of the whole batch, such as the predictor-corrector's "snr_batch" Langevin step:
it is averaged over the chunk (through `axis_name`), so such a set depends (weakly) on the
chunk size.

Parameters stay in the sharding they were trained with (`experiment.state_shardings`:
replicated, FSDP or FSDP + tensor); they never pass through a host-side replicated copy.
At the start of each chunk the program all-gathers every sharded leaf on the devices
(`jax.lax.all_gather(..., tiled=True)` over the axes its PartitionSpec names) and solves
with the gathered copy; the copy is freed when the chunk ends. Cost per chunk: one
all-gather of the parameters (negligible next to hundreds of network evaluations), and
device memory of one full parameter copy on top of the resident shard plus the chunk's
activations. Gathering per layer inside the solver's loop would save that copy but repeat
the all-gather at every step of every chunk.

Samples of each chunk are gathered to every process; `genjax.evaluate.resumable` writes them
chunk by chunk to the workdir, process 0 only.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import logging
import time
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from genjax import factory, workdir as workdir_lib
from genjax.evaluate.image_grid import class_rows, save_image_grid
from genjax.evaluate.plots import save_samples_figure
from genjax.experiment import Experiment, derive_key
from genjax.samplers.guidance import guided_model
from genjax.samplers.result import SampleResult
from genjax.train.parallel import BATCH_AXES, data_parallel_size

console = logging.getLogger("genjax")


class SamplingError(RuntimeError):
    """A solver gave up on some examples; the message says which option to raise."""


def chunk_capacity(experiment: Experiment, num_samples: int, chunk_size: int | None = None) -> int:
    """Global samples one chunk program draws: chunk_size (config.sampling.chunk_size when None;
    0 or more than num_samples means the whole set) rounded up to a multiple of the mesh's
    data-parallel size, so every device gets the same number of examples."""
    if chunk_size is None:
        chunk_size = experiment.config.sampling.chunk_size
    size = num_samples if chunk_size == 0 else min(chunk_size, num_samples)
    devices = data_parallel_size(experiment.mesh)
    return -(-max(size, 1) // devices) * devices


def chunk_ranges(num_samples: int, chunk: int, done: np.ndarray | None = None) -> list[tuple[int, int]]:
    """The index ranges [start, end) still to draw: every maximal run of indices not marked in
    `done` ([num_samples] bool; None: nothing done), cut into pieces of at most `chunk`."""
    missing = np.ones(num_samples, bool) if done is None else ~np.asarray(done, bool)
    ranges, i = [], 0
    while i < num_samples:
        if not missing[i]:
            i += 1
            continue
        end = i
        while end < num_samples and missing[end] and end - i < chunk:
            end += 1
        ranges.append((i, end))
        i = end
    return ranges


def parameter_shardings(experiment: Experiment, params):
    """Each leaf's NamedSharding when it already lives on the experiment's mesh (as a
    checkpoint restored with `experiment.abstract_state()` does), else replicated. Works on
    arrays and on ShapeDtypeStructs."""
    mesh = experiment.mesh

    def sharding(leaf):
        current = getattr(leaf, "sharding", None)
        if isinstance(current, NamedSharding) and current.mesh == mesh:
            return current
        return NamedSharding(mesh, P())

    return jax.tree.map(sharding, params)


def gather_leaf(leaf: jax.Array, spec: P) -> jax.Array:
    """The whole leaf from this device's shard: all-gather along every dimension the spec splits."""
    for dim, axes in enumerate(spec):
        if axes is not None:
            leaf = jax.lax.all_gather(leaf, axes, axis=dim, tiled=True)
    return leaf


@dataclasses.dataclass(frozen=True)
class ChunkProgram:
    """One compiled chunk: `run(params, key_data, start, condition)` draws global examples
    [start, start + chunk) and returns (samples, nfe, successful), split over the batch axes,
    and spent: [devices] int32, the evaluations each device's share cost (`share_evaluations`)."""
    run: Callable
    chunk: int
    conditional: bool
    memory: object  # XLA's CompiledMemoryStats of the program (per device), or None


def _sampler(experiment: Experiment, sampler_name: str):
    sampler = factory.build_sampler(experiment.config, sampler_name)
    parameters = inspect.signature(sampler.func).parameters
    if "throw" in parameters:
        sampler = functools.partial(sampler, throw=False)  # failures are reported per chunk, not raised on device
    if "axis_name" in parameters:
        sampler = functools.partial(sampler, axis_name=BATCH_AXES)  # batch statistics span the chunk
    return sampler


def share_evaluations(result: SampleResult) -> jax.Array:
    """Evaluations one device's share of a chunk cost: share size x max NFE of the share
    (`SampleResult.spent_nfe`). The share runs in lock step (a vmapped solve evaluates its
    finished examples, masked, until the slowest one is done; a per-batch solve gives every
    example the share's NFE), so this, summed over devices and chunks, is what a set cost. The
    last chunk's surplus examples (solved, then discarded) count: they were evaluated."""
    return result.nfe.shape[0] * result.spent_nfe


def compile_chunk(experiment: Experiment, sampler_name: str, chunk: int, params, conditional: bool,
                  model=None) -> ChunkProgram:
    """Lower and compile the chunk program for `chunk` global samples (a multiple of the
    data-parallel size) with `params` (arrays or ShapeDtypeStructs, in the shardings of
    `parameter_shardings`). `model` maps params to a `views.Model` (default `experiment.model`)."""
    model = experiment.model if model is None else model
    mesh, process, shape = experiment.mesh, experiment.process, experiment.data_shape
    sampler = _sampler(experiment, sampler_name)
    per_device = chunk // data_parallel_size(mesh)
    specs = jax.tree.map(lambda s: s.spec, parameter_shardings(experiment, params))

    def draw_local(params, key_data, start, *condition):
        params = jax.tree.map(gather_leaf, params, specs)
        first = start + jax.lax.axis_index(BATCH_AXES) * per_device
        result = sampler(process, model(params), jax.random.wrap_key_data(key_data), per_device, shape,
                         first_index=first, condition=condition[0] if condition else None)
        spent = share_evaluations(result)[None]
        return result.samples, result.nfe, result.successful, spent

    in_specs = (specs, P(), P()) + ((P(BATCH_AXES),) if conditional else ())
    program = jax.jit(jax.shard_map(draw_local, mesh=mesh, in_specs=in_specs, out_specs=P(BATCH_AXES),
                                    check_vma=False))
    replicated = NamedSharding(mesh, P())
    abstract = [
        jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), params,
                     parameter_shardings(experiment, params)),
        jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated),
        jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
    ]
    if conditional:
        abstract.append(jax.ShapeDtypeStruct((chunk,), jnp.int32, sharding=NamedSharding(mesh, P(BATCH_AXES))))
    compiled = program.lower(*abstract).compile()
    try:
        memory = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError):
        memory = None
    return ChunkProgram(compiled, chunk, conditional, memory)


def chunk_memory(experiment: Experiment, params, sampler_name: str, num_samples: int,
                 chunk_size: int | None = None) -> dict[str, int | None]:
    """XLA's per-device bytes of the compiled chunk program (compiled ahead of time, nothing
    run): arguments (the parameters' shards, key, start, labels), outputs (the chunk's
    samples), temporaries (the gathered parameters, the solver's state and activations) and
    XLA's peak estimate (on XLA:CPU it leaves the temporaries out). `params` may be
    ShapeDtypeStructs with shardings. num_samples matters only through the chunk
    (`chunk_capacity`): the program is the same for any set at least one chunk large. None
    where the backend does not say."""
    chunk = chunk_capacity(experiment, num_samples, chunk_size)
    memory = compile_chunk(experiment, sampler_name, chunk, params, experiment.conditional).memory
    fields = {"argument": "argument_size_in_bytes", "output": "output_size_in_bytes", "temp": "temp_size_in_bytes",
              "peak": "peak_memory_in_bytes"}
    return {"chunk": chunk, **{name: getattr(memory, field, None) for name, field in fields.items()}}


def _global(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host value every process holds whole."""
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Drawn examples [start, end) as host arrays (on every process). spent_nfe: the
    evaluations the chunk cost, summed over the devices' shares (`share_evaluations`)."""
    start: int
    end: int
    samples: np.ndarray
    nfe: np.ndarray
    seconds: float
    spent_nfe: int


def draw_chunks(experiment: Experiment, params, sampler_name: str, num_samples: int,
                ranges: list[tuple[int, int]] | None = None, chunk_size: int | None = None, model=None,
                condition: np.ndarray | None = None) -> Iterator[Chunk]:
    """Draw the index ranges `ranges` (default: the whole set, cut by `chunk_ranges`) of a
    num_samples set, one chunk program call per range, yielding each as it finishes. Every
    process must iterate it (it runs on the mesh). Raises SamplingError on the first chunk
    with a failed solve. Arguments as in `draw`."""
    chunk = chunk_capacity(experiment, num_samples, chunk_size)
    if ranges is None:
        ranges = chunk_ranges(num_samples, chunk)
    if any(end - start > chunk for start, end in ranges):
        raise ValueError(f"ranges longer than the chunk of {chunk} samples")
    if condition is None:
        condition = experiment.default_condition(num_samples)
    if condition is not None:
        condition = np.asarray(condition, np.int32)
        if condition.shape != (num_samples,):
            raise ValueError(f"condition must hold one label per sample, shape ({num_samples},), got {condition.shape}")
    if not ranges:
        return
    mesh = experiment.mesh
    params = jax.device_put(params, parameter_shardings(experiment, params))  # no-op for params already on the mesh
    program = compile_chunk(experiment, sampler_name, chunk, params, condition is not None, model)
    replicated = NamedSharding(mesh, P())
    key_data = _global(np.asarray(jax.random.key_data(derive_key(experiment.config.seed, "sample"))), replicated)
    for start, end in ranges:
        arguments = [params, key_data, _global(np.int32(start), replicated)]
        if condition is not None:
            labels = np.resize(condition[start:end], chunk)  # the surplus repeats labels; it is discarded
            arguments.append(_global(labels, NamedSharding(mesh, P(BATCH_AXES))))
        began = time.perf_counter()
        outputs = program.run(*arguments)
        *drawn, spent = (np.asarray(x) for x in multihost_utils.process_allgather(outputs, tiled=True))
        samples, nfe, successful = (x[: end - start] for x in drawn)
        seconds = time.perf_counter() - began
        if not successful.all():
            raise SamplingError(
                f"{sampler_name}: the solver failed on {int((~successful).sum())} of the {end - start} samples "
                f"{start}..{end - 1} "
                f"(step budget exhausted); raise samplers.{sampler_name}.max_steps or loosen its tolerances"
            )
        yield Chunk(start, end, samples, nfe, seconds, int(np.sum(spent, dtype=np.int64)))


class Progress:
    """One console line per chunk: samples done of the total (`done`: saved before this run),
    and this run's samples/s, ETA, and NFE: mean and max per sample, and the evaluations spent
    per sample (`Chunk.spent_nfe` summed, over the samples drawn; it exceeds the mean by the
    lock-step waste)."""

    def __init__(self, label: str, total: int, done: int = 0):
        self.label, self.total, self.done = label, total, done
        self.drawn, self.seconds, self.nfe_sum, self.nfe_max, self.spent_nfe = 0, 0.0, 0.0, 0, 0

    def update(self, chunk: Chunk) -> None:
        self.done += chunk.end - chunk.start
        self.drawn += chunk.end - chunk.start
        self.nfe_sum += float(np.sum(chunk.nfe, dtype=np.float64))
        self.nfe_max = max(self.nfe_max, int(np.max(chunk.nfe)))
        self.spent_nfe += chunk.spent_nfe
        self.seconds += chunk.seconds
        rate = self.drawn / max(self.seconds, 1e-9)
        eta = (self.total - self.done) / rate
        console.info("%s: %d/%d samples, %.1f samples/s, ETA %s, mean NFE %.1f, max NFE %d, spent NFE %.1f per sample",
                     self.label, self.done, self.total, rate, _duration(eta), self.nfe_sum / self.drawn, self.nfe_max,
                     self.spent_nfe / self.drawn)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def guided(experiment: Experiment, guidance: float):
    """params -> the experiment's model with classifier-free guidance weight `guidance`
    (genjax.samplers.guidance; 0: the model itself)."""
    return lambda params: guided_model(experiment.model(params), guidance)


def sample_set_name(sampler_name: str, guidance: float = 0.0) -> str:
    """The file stem's sampler part: the sampler's name, with "_guidance<w>" for a guided set."""
    return sampler_name if not guidance else f"{sampler_name}_guidance{guidance:g}"


def draw(experiment: Experiment, params, sampler_name: str, num_samples: int, model=None,
         condition: np.ndarray | None = None, chunk_size: int | None = None, progress: bool = False) -> dict:
    """num_samples draws with the named sampler, chunk by chunk in memory; returns host arrays
    of samples and per-example NFE, the evaluations spent (spent_nfe: summed over chunks and
    devices, `share_evaluations`) and the solve time in seconds (compilation excluded).
    Every process must call it (it runs on the mesh). `params`: in their trained sharding or
    any placement (see the module docstring). `model` maps params to a `views.Model` (default
    `experiment.model`; a bare per-example score is read as a score model, e.g.
    `lambda _: exact_score` runs the same sampler on an oracle). `condition`: the
    [num_samples] class labels of the samples; for a conditional model None means
    `experiment.default_condition` (class-balanced). `chunk_size`: global samples per chunk
    (None: config.sampling.chunk_size; 0: one chunk)."""
    samples, nfe, seconds, spent = [], [], 0.0, 0
    tracker = Progress(sampler_name, num_samples) if progress else None
    for chunk in draw_chunks(experiment, params, sampler_name, num_samples, chunk_size=chunk_size, model=model,
                             condition=condition):
        samples.append(chunk.samples)
        nfe.append(chunk.nfe)
        seconds += chunk.seconds
        spent += chunk.spent_nfe
        if tracker is not None:
            tracker.update(chunk)
    return {"samples": np.concatenate(samples), "nfe": np.concatenate(nfe), "spent_nfe": spent, "seconds": seconds}


def write_sample_set(workdir, step: int, sampler_name: str, drawn: dict, reference: np.ndarray,
                     data_range: tuple[float, float] = (-1.0, 1.0), labels: np.ndarray | None = None
                     ) -> tuple[str, str]:
    """`samples/step_<N>_<sampler>.npz` (samples, nfe, spent_nfe when known (a scalar, see
    `draw`), and labels of a conditional set) and the
    matching PNG beside the data; returns their paths relative to `workdir` (a local path or a
    URL). `sampler_name`: the set's name (`sample_set_name`). `data_range`: the image pixels'
    [lo, hi] (config.data.value_range), for the PNG grid. `labels`: the [n] class labels of a
    conditional set; its grid then has one row per class (`image_grid.class_rows`)."""
    directory = workdir_lib.resolve(workdir) / "samples"
    stem = f"step_{step}_{sampler_name}"
    buffer = io.BytesIO()
    arrays = {"samples": drawn["samples"], "nfe": drawn["nfe"]}
    if drawn.get("spent_nfe") is not None:
        arrays["spent_nfe"] = np.int64(drawn["spent_nfe"])
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    np.savez(buffer, **arrays)
    workdir_lib.write_bytes(directory / f"{stem}.npz", buffer.getvalue())
    if drawn["samples"].ndim == 4:  # images [n, H, W, C]: a grid, each pixel at least 1/32 of a 256-pixel tile
        height = drawn["samples"].shape[1]
        images, columns = drawn["samples"][:256], None
        if labels is not None:
            images, columns = class_rows(drawn["samples"], labels)
        save_image_grid(directory / f"{stem}.png", images, columns=columns, scale=max(1, 32 // height),
                        data_range=data_range)
    else:
        title = f"{sampler_name}, step {step}, mean NFE {drawn['nfe'].mean():.1f}"
        save_samples_figure(directory / f"{stem}.png", reference, drawn["samples"], title=title)
    return f"samples/{stem}.npz", f"samples/{stem}.png"
