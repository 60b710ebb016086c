"""Run lifecycle in one process: the learning-rate horizon stored in checkpoints, non-finite
data, the restored RNG key, the training lock, and a gs://-style workdir on an in-memory
filesystem (every file of a run goes through genjax.workdir)."""
import io
import json
import os
import struct
import subprocess
import sys

import fsspec
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import genjax.experiment as experiment_module
from genjax import checkpoint, workdir as workdir_lib
from genjax.experiment import Experiment, build_experiment
from genjax.factory import ConfigError
from genjax.train.loop import TrainingDivergedError, train
from tests.test_checkpoint import assert_trees_equal
from tests.tiny_config import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def experiment(num_steps, **optimizer):
    config = tiny_config(num_steps=num_steps)
    for name, value in optimizer.items():
        config.optimizer[name] = value
    return build_experiment(config, jax.devices()[:1])


# --- learning-rate schedule horizon ----------------------------------------------------------

def test_raising_num_steps_on_a_cosine_schedule_is_refused_unless_allowed(tmp_path):
    workdir = str(tmp_path)
    train(experiment(10, decay="cosine"), workdir)
    with pytest.raises(ConfigError, match=r"num_steps=10.*jump from .* to .*allow_schedule_change=True"):
        train(experiment(20, decay="cosine"), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10"]
    allowed = experiment(20, decay="cosine")
    allowed.config.unlock()
    allowed.config.training.allow_schedule_change = True
    assert int(train(allowed, workdir).step) == 20
    # The new horizon is what the newest checkpoint stores now.
    manager = checkpoint.open_manager(workdir, max_to_keep=3, save_interval_steps=1, create=False)
    _, meta, _ = checkpoint.restore(manager, allowed.abstract_state())
    manager.close()
    assert meta["schedule"]["horizon"] == 20


@pytest.mark.slow  # two trainings end to end
def test_a_constant_schedule_resumes_with_a_raised_target(tmp_path):
    workdir = str(tmp_path)
    train(experiment(10), workdir)
    assert int(train(experiment(20), workdir).step) == 20


# --- non-finite data ---------------------------------------------------------------------------

class PoisonedBatches(Experiment):
    """Step 7's batch carries three NaNs (0-based dispatch index 6)."""

    def global_batch(self, stream, step):
        batch = super().global_batch(stream, step)
        return {**batch, "x": batch["x"].at[:3, 0].set(np.nan)} if step == 6 else batch


def test_non_finite_data_stops_the_run_naming_the_step(tmp_path):
    base = experiment(20)
    poisoned = PoisonedBatches(**{f: getattr(base, f) for f in Experiment.__dataclass_fields__})
    with pytest.raises(TrainingDivergedError, match=r"non-finite values in the training batch of step 7 \(3 entries\)"):
        train(poisoned, str(tmp_path))
    assert not os.path.exists(os.path.join(str(tmp_path), "checkpoints", "10"))


# --- the restored RNG key ------------------------------------------------------------------------

def test_resume_continues_with_the_checkpointed_rng_key_not_the_configs(tmp_path, monkeypatch):
    """The resumed run's config derives another train key; a restore that re-derived the key
    from the config instead of using the checkpoint's would continue differently."""
    straight = jax.device_get(train(experiment(20), str(tmp_path / "straight")))
    workdir = str(tmp_path / "resumed")
    train(experiment(10), workdir)
    derive_key = experiment_module.derive_key

    def other_train_key(seed, purpose):
        key = derive_key(seed, purpose)
        return jax.random.fold_in(key, 99) if purpose == "train" else key

    monkeypatch.setattr(experiment_module, "derive_key", other_train_key)
    changed = experiment(20)
    # The fresh state's key alone (jitted, the network's init is left out of the program):
    assert not np.array_equal(jax.device_get(jax.jit(lambda: changed._init_state().rng)()), straight.rng)
    assert_trees_equal(jax.device_get(train(changed, workdir)), straight)


# --- the training lock -----------------------------------------------------------------------------

def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    workdir = workdir_lib.resolve(str(tmp_path))
    with workdir_lib.RunLock(workdir):
        with pytest.raises(workdir_lib.WorkdirError, match=f"in use by another training run \\(pid {os.getpid()} on"):
            workdir_lib.RunLock(workdir).acquire()
    workdir_lib.RunLock(workdir).acquire().release()  # released on exit


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from genjax import workdir as w; "
         f"lock = w.RunLock(w.resolve({str(tmp_path)!r})).acquire(); print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(workdir_lib.WorkdirError, match=f"pid {holder.pid}"):
            workdir_lib.RunLock(workdir_lib.resolve(str(tmp_path))).acquire()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
    workdir_lib.RunLock(workdir_lib.resolve(str(tmp_path))).acquire().release()


def test_a_stale_lease_on_an_object_store_is_taken_over(fake_gcs, monkeypatch):
    workdir = workdir_lib.resolve("gs://bucket/leased")
    lock = workdir_lib.RunLock(workdir).acquire()
    with pytest.raises(workdir_lib.WorkdirError, match="in use by another training run"):
        workdir_lib.RunLock(workdir).acquire()
    lock._stop.set()  # the holder dies without releasing: its heartbeat stops
    monkeypatch.setattr(workdir_lib, "LEASE_STALE_SECONDS", 0.0)
    workdir_lib.RunLock(workdir).acquire().release()


# --- URLs ------------------------------------------------------------------------------------------------

def test_json_files_stay_strict_json_when_a_metric_is_not_finite(tmp_path):
    """A failed NLL solve or a diverged loss is written as null, not as Python's bare NaN,
    which strict readers (JavaScript, jq, most JSON libraries) refuse."""
    path = workdir_lib.resolve(str(tmp_path)) / "eval.json"
    workdir_lib.write_json(path, {"nll": float("nan"), "rows": [1.5, float("inf")], "nested": {"x": -float("inf")}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nll": None, "rows": [1.5, None], "nested": {"x": None}}


def test_workdir_urls_resolve_to_one_abstraction(tmp_path):
    assert str(workdir_lib.resolve(f"file://{tmp_path}/run")) == f"{tmp_path}/run"
    assert str(workdir_lib.resolve("relative/run")) == os.path.abspath("relative/run")
    with pytest.raises(workdir_lib.WorkdirError, match="absolute path"):
        workdir_lib.resolve("file://relative/run")
    with pytest.raises(workdir_lib.WorkdirError, match="unknown URL scheme ftp://"):
        workdir_lib.resolve("ftp://host/run")


def test_a_missing_object_store_backend_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(workdir_lib.importlib.util, "find_spec", lambda name: None)
    registry = sys.modules["fsspec.registry"]
    monkeypatch.setitem(registry.known_implementations, "s3", {"class": "no_such_module.S3FileSystem"})
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    with pytest.raises(workdir_lib.WorkdirError, match=r"needs the s3fs package \(pip install s3fs\) or TensorFlow"):
        workdir_lib.resolve("s3://bucket/run")


class FakeGCS(MemoryFileSystem):
    """An in-memory filesystem serving gs:// URLs, as gcsfs would."""

    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
        path = path[len("gs://"):] if path.startswith("gs://") else path
        return "/" + path.lstrip("/").rstrip("/")


@pytest.fixture
def fake_gcs(monkeypatch):
    from etils.epath import backend

    FakeGCS.store.clear()
    FakeGCS.pseudo_dirs[:] = [""]
    for name in ("gs", "gcs"):
        fsspec.register_implementation(name, FakeGCS, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()
    monkeypatch.setattr(workdir_lib.importlib.util, "find_spec", lambda name: None)  # no TensorFlow: fsspec
    yield FakeGCS
    backend.fsspec_backend._get_filesystem.cache_clear()


def read_events(data: bytes):
    """TensorBoard's framing: length, masked CRC of the length, payload, masked CRC."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    events, offset = [], 0
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("Q", header)
        assert struct.unpack("I", data[offset + 8:offset + 12])[0] == masked_crc32c(header)
        payload = data[offset + 12:offset + 12 + length]
        assert struct.unpack("I", data[offset + 12 + length:offset + 16 + length])[0] == masked_crc32c(payload)
        events.append(event_pb2.Event.FromString(payload))
        offset += 16 + length
    return events


def test_a_gs_workdir_receives_every_file_and_orbax_gets_the_url(fake_gcs, monkeypatch, tmp_path):
    """Train, resume, sample and evaluate on gs://bucket/run. orbax's own I/O (tensorstore)
    cannot use an fsspec filesystem, so its manager is pointed at a local directory after
    recording the URL it was given."""
    from genjax.evaluate.evaluator import evaluate

    given = []
    real_manager = ocp.CheckpointManager

    def recording_manager(directory, **kwargs):
        given.append(str(directory))
        return real_manager(str(tmp_path / "orbax"), **kwargs)

    monkeypatch.setattr(checkpoint.ocp, "CheckpointManager", recording_manager)
    url = "gs://bucket/run"
    first = experiment(10)
    train(first, url)
    resumed = experiment(20)
    state = train(resumed, url)
    assert given == [f"{url}/checkpoints"] * 2
    evaluate(resumed, state.ema_params, 20, url)

    files = {path[len("/bucket/run/"):]: value.getvalue() for path, value in fake_gcs.store.items()}
    assert json.loads(files["config.json"])["training"]["num_steps"] == 20  # the latest invocation's
    assert [json.loads(line)["step"] for line in files["metrics.jsonl"].decode().splitlines()] == [5, 10, 15, 20]
    event_files = [name for name in files if name.startswith("tensorboard/events.out.tfevents.")]
    assert len(event_files) == 2  # one per session
    losses = {e.step: e.summary.value[0].simple_value for name in event_files for e in read_events(files[name])
              if e.summary.value and e.summary.value[0].tag == "loss"}
    assert sorted(losses) == [5, 10, 15, 20]
    evaluation = json.loads(files["eval/step_20.json"])
    for name in ("euler_maruyama", "probability_flow"):
        samples = np.load(io.BytesIO(files[evaluation["samplers"][name]["samples"]]))["samples"]
        assert samples.shape == (256, 2) and np.isfinite(samples).all()
        assert files[evaluation["samplers"][name]["figure"]][:8] == b"\x89PNG\r\n\x1a\n"
    assert not os.path.exists(os.path.join(os.getcwd(), "gs:"))
