"""A sample set saved chunk by chunk in the workdir, so that an interrupted run resumes.

    samples/step_<N>_<sampler>.parts/manifest.json      what the set is drawn with
    samples/step_<N>_<sampler>.parts/<start>_<end>.npz  samples, NFE and evaluations spent of [start, end)

Each finished chunk is written at once (through `genjax.workdir`, so a URL workdir works;
local files appear atomically under their final name). A rerun of the same command reads
the manifest, skips the index ranges already saved and draws the rest; ranges, not chunk
numbers, identify the parts, so the chunk size and the device count may change between runs.
A manifest that does not match the run (another seed, sample count or sampler option) is
refused, naming the field. When every index is saved the parts are assembled into one set;
the caller writes it as `samples/step_<N>_<sampler>.npz` and then removes the parts
(`remove_parts`). Only process 0 reads and writes files; it tells the others what is left.
"""
from __future__ import annotations

import io
import json
import re

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from genjax import workdir as workdir_lib
from genjax.evaluate.sampling import (Progress, SamplingError, chunk_capacity, chunk_ranges, draw_chunks, guided,
                                     sample_set_name)
from genjax.experiment import Experiment
from genjax.train.preemption import Preempted, PreemptionWatcher

MANIFEST = "manifest.json"
_PART = re.compile(r"^(\d+)_(\d+)\.npz$")


class SamplingPreempted(Preempted):
    """Sampling stopped on a preemption signal; the finished chunks are saved."""

    def __init__(self, done: int, total: int, directory):
        Exception.__init__(self, f"preempted: {done} of {total} samples saved in {directory}; "
                                 f"rerun the same command to resume")
        self.step = done


def parts_directory(workdir, step: int, sampler_name: str) -> epath.Path:
    return workdir_lib.resolve(workdir) / "samples" / f"step_{step}_{sampler_name}.parts"


def manifest(experiment: Experiment, sampler_name: str, num_samples: int, step: int, guidance: float = 0.0) -> dict:
    """Everything besides the weights that decides the samples, keyed by config field. (The
    weights are those of checkpoint `step`, which names the directory.)"""
    config = experiment.config
    options = config.samplers.get(sampler_name, {})
    fields = {
        "sampling.sampler": sampler_name,
        "sampling.num_samples": num_samples,
        "step": step,
        "seed": config.seed,
        "model.num_classes": config.model.num_classes,
        "process": {"name": config.process.name, "kwargs": dict(config.process.kwargs)},
        f"samplers.{sampler_name}": dict(options),
    }
    if guidance:
        fields["sampling.guidance"] = guidance
    return json.loads(workdir_lib.json_text(fields))  # tuples as lists, as read back from the file


def _difference(saved, expected, path: str) -> str | None:
    """The first field (dotted path) where two manifests differ, with both values."""
    if isinstance(saved, dict) and isinstance(expected, dict):
        for key in sorted(set(saved) | set(expected)):
            found = _difference(saved.get(key), expected.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if saved != expected:
        return f"{path}={saved!r}, but this run has {path}={expected!r}"
    return None


def _read_saved(directory: epath.Path, expected: dict, num_samples: int) -> np.ndarray:
    """[num_samples] bool, True where a saved part holds the example; SamplingError if the
    directory's manifest does not match `expected`. Writes the manifest if there is none."""
    done = np.zeros(num_samples, bool)
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        workdir_lib.write_json(manifest_path, expected)
        return done
    try:
        saved = json.loads(manifest_path.read_text())
    except ValueError:
        raise SamplingError(f"{manifest_path} is not valid JSON; delete {directory} to start the set over") from None
    difference = _difference(saved, expected, "")
    if difference:
        raise SamplingError(f"{directory} holds a partial sample set drawn with {difference}; restore that setting "
                            f"to resume it, or delete {directory} to start over")
    for path in directory.iterdir():
        match = _PART.match(path.name)
        if match:
            start, end = int(match.group(1)), int(match.group(2))
            done[start:end] = True
    return done


def _agree(done: np.ndarray | None, refusal: str | None, num_samples: int) -> np.ndarray:
    """Process 0's view (what is saved, or why it refuses) on every process."""
    if jax.process_count() > 1:
        refused = bool(multihost_utils.broadcast_one_to_all(np.int32(refusal is not None)))
        if refused:
            raise SamplingError(refusal or "process 0 refused to resume the sample set (its error line says why)")
        mask = np.zeros(num_samples, np.int8) if done is None else done.astype(np.int8)
        return np.asarray(multihost_utils.broadcast_one_to_all(mask)).astype(bool)
    if refusal is not None:
        raise SamplingError(refusal)
    return done


def _write_part(directory: epath.Path, chunk) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, samples=chunk.samples, nfe=chunk.nfe, spent_nfe=np.int64(chunk.spent_nfe))
    workdir_lib.write_bytes(directory / f"{chunk.start}_{chunk.end}.npz", buffer.getvalue())


def assemble(directory: epath.Path, num_samples: int) -> dict:
    """The whole set {"samples", "nfe", "spent_nfe"} from the parts (spent_nfe: the parts'
    evaluations spent, summed; None if a part saved by an older version lacks it); SamplingError
    if an index is missing."""
    samples = nfe = None
    spent = 0
    done = np.zeros(num_samples, bool)
    for path in sorted(directory.iterdir()):
        match = _PART.match(path.name)
        if not match:
            continue
        start, end = int(match.group(1)), int(match.group(2))
        with np.load(io.BytesIO(path.read_bytes())) as part:
            if samples is None:
                samples = np.empty((num_samples,) + part["samples"].shape[1:], part["samples"].dtype)
                nfe = np.empty((num_samples,), part["nfe"].dtype)
            samples[start:end], nfe[start:end] = part["samples"], part["nfe"]
            spent = None if spent is None or "spent_nfe" not in part.files else spent + int(part["spent_nfe"])
        done[start:end] = True
    if not done.all():
        raise SamplingError(f"{directory} lacks samples {int(np.argmin(done))} and later; rerun to draw them")
    return {"samples": samples, "nfe": nfe, "spent_nfe": spent}


def draw_resumably(experiment: Experiment, params, sampler_name: str, num_samples: int, workdir, step: int,
                   chunk_size: int | None = None, max_chunks: int | None = None, guidance: float = 0.0) -> dict | None:
    """Draw the set chunk by chunk into `parts_directory`, skipping the ranges already saved.
    Every process must call it. Returns, on process 0, the whole set {"samples", "nfe",
    "spent_nfe", "seconds"} (spent_nfe: over all the parts, also those of earlier runs;
    seconds: this run's solve time); None on other processes, and everywhere when
    it stopped after `max_chunks` chunks (for tests). `guidance`: the classifier-free guidance
    weight (genjax.samplers.guidance; the set is named `sample_set_name(sampler, guidance)`). Raises SamplingPreempted on SIGTERM
    (JAX's preemption sync point in multi-process runs) after saving the chunk in flight."""
    directory = parts_directory(workdir, step, sample_set_name(sampler_name, guidance))
    lead = jax.process_index() == 0
    done, refusal = None, None
    if lead:
        try:
            done = _read_saved(directory, manifest(experiment, sampler_name, num_samples, step, guidance), num_samples)
        except SamplingError as error:
            refusal = str(error)
    done = _agree(done, refusal, num_samples)
    chunk = chunk_capacity(experiment, num_samples, chunk_size)
    ranges = chunk_ranges(num_samples, chunk, done)
    progress = Progress(sampler_name, num_samples, done=int(done.sum()))
    seconds = 0.0
    with PreemptionWatcher() as preemption:
        for number, drawn in enumerate(draw_chunks(experiment, params, sampler_name, num_samples, ranges,
                                                   chunk_size=chunk_size, model=guided(experiment, guidance))):
            if lead:
                _write_part(directory, drawn)
            seconds += drawn.seconds
            progress.update(drawn)
            if max_chunks is not None and number + 1 >= max_chunks and progress.done < num_samples:
                return None
            if preemption.requested(number) and progress.done < num_samples:
                raise SamplingPreempted(progress.done, num_samples, directory)
    if not lead:
        return None
    return {**assemble(directory, num_samples), "seconds": seconds}


def remove_parts(workdir, step: int, sampler_name: str) -> None:
    """Delete the parts once the assembled set is written (process 0)."""
    directory = parts_directory(workdir, step, sampler_name)
    if directory.exists():
        directory.rmtree()
