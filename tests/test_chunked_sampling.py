"""Chunked, sharded, resumable sampling: a sample set does not depend on the chunk size, the
device count, the parameters' sharding (FSDP-trained checkpoints sample on 8 and on 1 device)
or an interruption; the chunk program compiles once; a resumed set refuses a changed config;
the chunk program's memory follows the chunk size, not the set size."""
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from genjax import checkpoint, factory, workdir as workdir_lib
from genjax.evaluate import resumable, sampling
from genjax.evaluate.resumable import draw_resumably, parts_directory
from genjax.evaluate.sampling import chunk_capacity, chunk_ranges, draw
from genjax.experiment import build_experiment
from genjax.factory import ConfigError
from genjax.processes.views import Model
from genjax.train.loop import train
from tests.subprocess_env import cpu_environment
from tests.tiny_config import tiny_config, tiny_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM = 100  # not a multiple of any chunk below: the last chunk is always partial
SAMPLER = "euler_maruyama"


def config(fsdp=False, **sampling_fields):
    c = tiny_config()
    c.samplers.euler_maruyama.num_steps = 10
    if fsdp:  # every leaf of 16+ elements split over the fsdp axis
        c.mesh.data, c.mesh.fsdp = 1, -1
        c.sharding.params, c.sharding.fsdp_min_size = "fsdp", 16
    for name, value in sampling_fields.items():
        c.sampling[name] = value
    return c


def experiment(devices=8, **options):
    return build_experiment(config(**options), devices=jax.devices()[:devices])


@pytest.fixture(scope="module")
def replicated_run():
    """A fresh experiment's EMA weights replicated on 8 devices and its set drawn in one chunk
    (13 examples per device). The tests reuse a few (mesh, chunk) programs, which the test
    run's compilation cache then serves."""
    exp = experiment(8)
    params = jax.jit(lambda: random_weights(exp.state_shapes.ema_params))()
    return exp, params, draw(exp, params, SAMPLER, NUM, chunk_size=0)


def random_weights(shapes):
    """Normal draws (std 0.3) in the network's parameter shapes, one program for all: the
    samples should depend on every leaf (so that a wrongly gathered one shows), and the
    network's own init would leave its output layer at zero."""
    leaves, tree = jax.tree.flatten(shapes)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, leaf.shape, leaf.dtype)
                                     for leaf, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def in_chunks_of_16(replicated_run):
    """The same set in chunks of 16 on the 8 devices (2 examples per device; last chunk partial),
    with the chunk sizes compiled and the chunks drawn on the way (spied on)."""
    exp, params, _ = replicated_run
    compiled, chunks = [], []
    compile_chunk, draw_chunks = sampling.compile_chunk, sampling.draw_chunks

    def drawn_chunks(*args, **kwargs):
        for chunk in draw_chunks(*args, **kwargs):
            chunks.append(chunk)
            yield chunk

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sampling, "compile_chunk", lambda *a, **k: compiled.append(a[2]) or compile_chunk(*a, **k))
        patch.setattr(sampling, "draw_chunks", drawn_chunks)
        drawn = draw(exp, params, SAMPLER, NUM, chunk_size=16)
    return dict(drawn, compiled=compiled, chunks=chunks)


@pytest.fixture(scope="module")
def fsdp_checkpoint(tmp_path_factory):
    """A few training steps under FSDP on 8 devices, saved by the train loop."""
    workdir = tmp_path_factory.mktemp("fsdp_run")
    c = config(fsdp=True)
    c.training.num_steps, c.training.checkpoint_every, c.training.log_every, c.training.sync_every = 4, 4, 2, 2
    state = train(build_experiment(c, devices=jax.devices()[:8]), workdir)
    return workdir, c, jax.device_get(state.ema_params)


def restore_ema(workdir, c, devices):
    exp = build_experiment(c, devices=jax.devices()[:devices])
    manager = checkpoint.open_manager(workdir, max_to_keep=3, save_interval_steps=1, create=False)
    try:
        state = checkpoint.restore_newest_intact(manager, exp.abstract_state(), quarantine=False).state
    finally:
        manager.close()
    return exp, state.ema_params


def test_chunk_ranges_cover_the_missing_indices_in_pieces_of_at_most_one_chunk():
    assert chunk_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    done = np.zeros(10, bool)
    done[2:5] = done[9] = True
    assert chunk_ranges(10, 3, done) == [(0, 2), (5, 8), (8, 9)]
    assert chunk_ranges(10, 3, np.ones(10, bool)) == []


def test_chunk_capacity_rounds_up_to_the_data_parallel_size(replicated_run):
    exp = replicated_run[0]  # 8 devices
    assert chunk_capacity(exp, NUM, 0) == 104 and chunk_capacity(exp, NUM, 20) == 24
    assert chunk_capacity(exp, NUM, 1000) == 104 and chunk_capacity(exp, NUM, 8) == 8


def test_sample_set_does_not_depend_on_chunk_size_or_device_count(replicated_run, in_chunks_of_16):
    """Per-example fixed steps: with equal per-device batches (13, or 2 examples per device) bit
    for bit across chunk sizes and 8 vs 1 device; with other per-device batches XLA may round
    differently, so to float precision."""
    exp8, params, whole = replicated_run
    assert whole["samples"].shape == (NUM, 2) and (whole["nfe"] == 11).all()
    exp1, host_params = experiment(1), jax.device_get(params)
    on_one = draw(exp1, host_params, SAMPLER, NUM, chunk_size=13)
    np.testing.assert_array_equal(on_one["samples"], whole["samples"])
    np.testing.assert_array_equal(on_one["nfe"], whole["nfe"])
    in_chunks = in_chunks_of_16["samples"]
    np.testing.assert_array_equal(draw(exp1, host_params, SAMPLER, NUM, chunk_size=2)["samples"], in_chunks)
    scale = np.abs(whole["samples"]).max()
    np.testing.assert_allclose(in_chunks, whole["samples"], rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("layout", ["fsdp", "fsdp_tensor"])
def test_sharded_parameters_sample_as_replicated_ones(replicated_run, in_chunks_of_16, layout):
    """The same weights split over 8 devices by the FSDP rule (mesh fsdp=8, chunks of 16) or by
    FSDP x tensor (mesh 2x2x2, chunks of 8), gathered inside the chunk program, draw the
    replicated weights' set bit for bit (2 examples per device in each), and stay sharded."""
    _, params, _ = replicated_run
    c = config(fsdp=True)
    chunk_size = 16
    if layout == "fsdp_tensor":
        c.mesh.data, c.mesh.fsdp, c.mesh.tensor, c.sharding.params = 2, 2, 2, "fsdp_tensor"
        chunk_size = 8
    exp = build_experiment(c, devices=jax.devices()[:8])
    sharded = jax.device_put(jax.device_get(params), exp.state_shardings.ema_params)
    leaves = jax.tree.leaves(sharded)
    assert sum(leaf.sharding.shard_shape(leaf.shape) != leaf.shape for leaf in leaves) >= 8  # really split
    if layout == "fsdp_tensor":  # kernels split over both axes on one dimension
        assert sum(leaf.sharding.spec == P(None, ("tensor", "fsdp")) for leaf in leaves) >= 4
    drawn = draw(exp, sharded, SAMPLER, NUM, chunk_size=chunk_size)
    np.testing.assert_array_equal(drawn["samples"], in_chunks_of_16["samples"])
    assert [leaf.sharding for leaf in jax.tree.leaves(sharded)] == [leaf.sharding for leaf in leaves]


def test_chunk_program_compiles_once_for_all_chunks(in_chunks_of_16):
    compiled, chunks = in_chunks_of_16["compiled"], in_chunks_of_16["chunks"]
    assert compiled == [16]
    assert [(c.start, c.end) for c in chunks] == [(s, min(s + 16, NUM)) for s in range(0, NUM, 16)]
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), in_chunks_of_16["samples"])


def labelled_points(key, num):
    """2-D points labelled 0, 1, 2 (the data's content does not matter here, only its labels)."""
    return {"x": jax.random.normal(key, (num, 2)), "label": jnp.arange(num, dtype=jnp.int32) % 3}


def test_a_conditional_set_keeps_each_samples_label_across_chunks(monkeypatch):
    """Labels i % 3 follow example i into whichever chunk and device draws it: a denoiser that
    returns its example's label ends every sample at that label, in chunks of 24 on 8 devices
    and of 13 on 1 device (partial last chunks)."""
    monkeypatch.setitem(factory.DATASETS, "labelled_points", labelled_points)
    c = config()
    c.data.name, c.model.num_classes = "labelled_points", 3
    denoiser = lambda x, t, condition, **_: jnp.broadcast_to(condition[:, None].astype(x.dtype), x.shape)
    model = lambda _: Model(denoiser, "denoised")
    labels = np.broadcast_to((np.arange(NUM) % 3)[:, None], (NUM, 2))
    for devices, chunk_size in ((8, 24), (1, 13)):
        exp = build_experiment(c, devices=jax.devices()[:devices])
        np.testing.assert_allclose(draw(exp, {}, SAMPLER, NUM, model=model, chunk_size=chunk_size)["samples"], labels,
                                   atol=0.05)


@pytest.mark.slow  # trains (about 25 s)
def test_an_fsdp_trained_checkpoint_samples_the_same_on_8_and_on_1_device(fsdp_checkpoint):
    workdir, c, trained_ema = fsdp_checkpoint
    exp8, sharded = restore_ema(workdir, c, 8)
    specs = [leaf.sharding.spec for leaf in jax.tree.leaves(sharded)]
    assert sum(spec != P() for spec in specs) >= 8, specs  # the weights really are split over the devices
    on_eight = draw(exp8, sharded, SAMPLER, NUM, chunk_size=24)  # 3 examples per device
    assert [leaf.sharding.spec for leaf in jax.tree.leaves(sharded)] == specs  # still sharded afterwards
    exp1, single = restore_ema(workdir, c, 1)
    on_one = draw(exp1, single, SAMPLER, NUM, chunk_size=3)
    np.testing.assert_array_equal(on_eight["samples"], on_one["samples"])
    # The trained weights, not the initial ones: the set differs from an untrained model's.
    untrained = draw(exp1, jax.device_get(exp1.init_state().ema_params), SAMPLER, NUM, chunk_size=3)
    assert np.abs(untrained["samples"] - on_one["samples"]).max() > 1e-3


def test_interrupted_set_resumes_to_the_uninterrupted_one(replicated_run, in_chunks_of_16, tmp_path, caplog,
                                                          monkeypatch):
    """Stopped after 2 chunks of 16 on 8 devices, resumed in chunks of 2 on 1 device (the same
    2 examples per device): bit for bit the uninterrupted set, drawing only the missing ranges."""
    exp, params, _ = replicated_run
    uninterrupted = in_chunks_of_16
    caplog.set_level(logging.INFO, logger="genjax")
    assert draw_resumably(exp, params, SAMPLER, NUM, tmp_path, step=7, chunk_size=16, max_chunks=2) is None
    directory = parts_directory(tmp_path, 7, SAMPLER)
    assert sorted(p.name for p in directory.iterdir()) == ["0_16.npz", "16_32.npz", "manifest.json"]
    assert "32/100 samples" in caplog.text and "samples/s, ETA" in caplog.text and "mean NFE 11.0" in caplog.text
    drawn_ranges = []
    original = sampling.draw_chunks

    def spy(*args, **kwargs):
        drawn_ranges.extend(args[4])
        return original(*args, **kwargs)

    monkeypatch.setattr(resumable, "draw_chunks", spy)
    resumed = draw_resumably(experiment(1), jax.device_get(params), SAMPLER, NUM, tmp_path, step=7, chunk_size=2)
    assert drawn_ranges == [(start, start + 2) for start in range(32, NUM, 2)]
    np.testing.assert_array_equal(resumed["samples"], uninterrupted["samples"])
    np.testing.assert_array_equal(resumed["nfe"], uninterrupted["nfe"])


@pytest.mark.parametrize("field, value, named", [
    ("seed", 1, "seed=0, but this run has seed=1"),
    ("samplers.euler_maruyama.num_steps", 11, "samplers.euler_maruyama.num_steps=10, but this run has "
                                              "samplers.euler_maruyama.num_steps=11"),
])
def test_resuming_with_a_changed_config_is_refused_naming_the_field(replicated_run, tmp_path, field, value, named):
    """A partial set (its manifest and one saved part) met by a run with another setting."""
    exp, params, _ = replicated_run
    directory = parts_directory(tmp_path, 7, SAMPLER)
    workdir_lib.write_json(directory / resumable.MANIFEST, resumable.manifest(exp, SAMPLER, NUM, step=7))
    workdir_lib.write_bytes(directory / "0_16.npz", b"saved")
    changed = config()
    section, _, name = field.rpartition(".")
    (changed[section.split(".")[0]][section.split(".")[1]] if section else changed)[name] = value
    with pytest.raises(sampling.SamplingError) as error:
        draw_resumably(build_experiment(changed, devices=jax.devices()[:8]), params, SAMPLER, NUM, tmp_path, step=7)
    assert named in str(error.value) and f"delete {directory}" in str(error.value)
    assert (directory / "0_16.npz").read_bytes() == b"saved"  # nothing saved is lost or overwritten


def test_a_failed_solve_stops_at_its_chunk_naming_the_option_to_raise(replicated_run, tmp_path):
    """Raised at the first chunk whose solve failed (of two), before it is saved."""
    c = config()
    c.samplers.probability_flow.max_steps = 2
    exp = build_experiment(c, devices=jax.devices()[:1])
    params = jax.device_get(replicated_run[1])
    with pytest.raises(sampling.SamplingError, match=r"failed on 4 of the 4 samples 0\.\.3 .*raise "
                                                      r"samplers.probability_flow.max_steps"):
        draw_resumably(exp, params, "probability_flow", 8, tmp_path, step=1, chunk_size=4)
    assert [p.name for p in parts_directory(tmp_path, 1, "probability_flow").iterdir()] == ["manifest.json"]


def test_a_negative_chunk_size_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^sampling.chunk_size=-1 must be a non-negative integer$"):
        experiment(1, chunk_size=-1)


def test_chunk_memory_follows_the_chunk_size_not_the_set_size(replicated_run):
    """The same program for 1,000 and 100,000 samples in chunks of 16; chunks of 104 need more."""
    exp, params, _ = replicated_run
    small = sampling.chunk_memory(exp, params, SAMPLER, num_samples=1000, chunk_size=16)
    large_set = sampling.chunk_memory(exp, params, SAMPLER, num_samples=100_000, chunk_size=16)
    large_chunk = sampling.chunk_memory(exp, params, SAMPLER, num_samples=1000, chunk_size=104)
    assert small == large_set and small["chunk"] == 16 and large_chunk["chunk"] == 104
    assert large_chunk["output"] > 3 * small["output"] and large_chunk["temp"] > small["temp"]


def run_main(workdir, *args, devices):
    command = [sys.executable, "-m", "experiments.main", "--config=configs/base.py", f"--workdir={workdir}",
               *tiny_overrides(num_steps=10), *args]
    return subprocess.Popen(command, cwd=ROOT, env=cpu_environment(devices), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_cli_sample_set_resumes_after_sigterm_with_another_chunk_size_and_device_count(tmp_path):
    """--mode=sample stopped by SIGTERM after its first saved chunk, rerun with another chunk
    size on another device count (the same 8 examples per device): bit for bit the file of an
    uninterrupted run."""
    workdir = str(tmp_path / "run")
    assert run_main(workdir, devices=4).wait(timeout=600) == 0
    sample = ["--mode=sample", "--config.sampling.num_samples=512", "--config.samplers.euler_maruyama.num_steps=400"]
    final = os.path.join(workdir, "samples", "step_10_euler_maruyama.npz")
    uninterrupted = run_main(workdir, *sample, "--config.sampling.chunk_size=32", devices=4)
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.stderr.read()[-3000:]
    expected = np.load(final)["samples"]
    os.remove(final)
    parts = os.path.join(workdir, "samples", "step_10_euler_maruyama.parts")
    stopped = run_main(workdir, *sample, "--config.sampling.chunk_size=32", devices=4)
    while not (os.path.isdir(parts) and any(name.endswith(".npz") for name in os.listdir(parts))):
        assert stopped.poll() is None, stopped.stderr.read()[-3000:]
        time.sleep(0.01)
    stopped.send_signal(signal.SIGTERM)
    out, err = stopped.communicate(timeout=600)
    assert stopped.returncode == 0 and "preempted:" in out and "rerun the same command to resume" in out, err
    saved = sorted(name for name in os.listdir(parts) if name.endswith(".npz"))
    assert 0 < len(saved) < 16 and not os.path.exists(final)
    resumed = run_main(workdir, *sample, "--config.sampling.chunk_size=8", devices=1)  # 8 per device, as before
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert "samples/s" in out and "/512 samples" in out
    np.testing.assert_array_equal(np.load(final)["samples"], expected)
    assert not os.path.exists(parts)  # removed once the whole set is written
