"""The run directory: one path abstraction for local disks and object stores, and the lock
that keeps two trainers off one directory.

Every file a run reads or writes goes through `resolve(workdir)`, an `etils.epath.Path`
(what orbax uses): a plain path becomes an absolute local path, `file:///abs/dir` the same
local path, and `gs://bucket/run` (or s3://, az://) stays a URL that orbax receives
unchanged. epath reaches object stores through TensorFlow's gfile when TensorFlow is
installed, else through fsspec, which needs the store's package (gcsfs for gs://, s3fs for
s3://, adlfs for az://); a missing one is a `WorkdirError` naming the package.

Object stores have no append and no rename-free atomic replace: `AppendFile` appends on a
local disk and rewrites the whole (small) object on a store; `write_bytes` writes a local
file through a temporary name and `os.replace`, so a reader never sees half a file.

Lock (training only). A local workdir is locked with `fcntl.flock` on `workdir/lock`: the
kernel releases it when the holder dies, even by SIGKILL, so a dead run never blocks the
next start. On a URL workdir no such lock exists; the trainer writes a lease
`workdir/lock` (JSON: host, pid, start, heartbeat) and refreshes the heartbeat every
`LEASE_HEARTBEAT_SECONDS`; a lease whose heartbeat is older than `LEASE_STALE_SECONDS` is
taken over (a killed run blocks the next start for at most that long). The lease is best
effort: two starts within the same second can both win. Sampling and evaluation take no
lock: they read only finalised checkpoints and never move or delete anything.
"""
from __future__ import annotations

import datetime
import importlib.util
import io
import json
import math
import os
import socket
import tempfile
import threading
import time
from typing import Any

from etils import epath

LOCK_NAME = "lock"
LEASE_HEARTBEAT_SECONDS = 30.0
LEASE_STALE_SECONDS = 120.0

# The packages epath's fsspec backend needs per URL scheme (TensorFlow's gfile serves all).
_STORE_PACKAGES = {"gs": "gcsfs", "s3": "s3fs", "az": "adlfs"}


class WorkdirError(RuntimeError):
    """The workdir cannot be used (bad URL, missing backend, held by another run)."""


def resolve(workdir: str | os.PathLike) -> epath.Path:
    """The workdir as an epath.Path: URLs unchanged, `file://` and plain paths absolute local."""
    text = os.fspath(workdir)
    if text.startswith("file://"):
        local = text[len("file://"):]
        if not local.startswith("/"):
            raise WorkdirError(f"--workdir={text!r}: a file:// URL needs an absolute path, e.g. file:///data/run")
        return epath.Path(os.path.abspath(local))
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme not in _STORE_PACKAGES:
            known = ", ".join(f"{s}://" for s in ("file", *_STORE_PACKAGES))
            raise WorkdirError(f"--workdir={text!r}: unknown URL scheme {scheme}://; use a local path or one of {known}")
        _check_store_backend(scheme, text)
        return epath.Path(text)
    return epath.Path(os.path.abspath(text))


def _check_store_backend(scheme: str, text: str) -> None:
    if importlib.util.find_spec("tensorflow") is not None:
        return
    package = _STORE_PACKAGES[scheme]
    try:
        import fsspec

        fsspec.get_filesystem_class("gcs" if scheme == "gs" else scheme)
    except (ImportError, ValueError):
        raise WorkdirError(
            f"--workdir={text!r}: reading and writing {scheme}:// needs the {package} package "
            f"(pip install {package}) or TensorFlow"
        ) from None


def is_local(path: epath.Path) -> bool:
    return "://" not in os.fspath(path)


def write_bytes(path: epath.Path, data: bytes) -> None:
    """Write a whole file, creating its directory; local files appear atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not is_local(path):
        path.write_bytes(data)
        return
    handle, temporary = tempfile.mkstemp(dir=os.fspath(path.parent), prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(temporary, os.fspath(path))
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_text(path: epath.Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_text(value: Any, **options) -> str:
    """Strict JSON (RFC 8259) of `value`: a non-finite float (a NaN loss, an infinite NLL)
    becomes null, which every JSON reader accepts; Python's bare NaN/Infinity would not be."""

    def finite(item):
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(entry) for key, entry in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(entry) for entry in item]
        return item

    return json.dumps(finite(value), allow_nan=False, **options)


def write_json(path: epath.Path, value: Any) -> None:
    write_text(path, json_text(value, indent=2) + "\n")


class AppendFile:
    """A file that only grows: appended in place on a local disk, rewritten whole (with
    what it held when opened) on an object store at every `flush`."""

    def __init__(self, path: epath.Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = is_local(path)
        if self._local:
            self._file = open(os.fspath(path), "ab")
        else:
            self._content = io.BytesIO()
            if path.exists():
                self._content.write(path.read_bytes())

    def write(self, data: bytes) -> None:
        (self._file if self._local else self._content).write(data)

    def flush(self) -> None:
        if self._local:
            self._file.flush()
        else:
            self.path.write_bytes(self._content.getvalue())

    def close(self) -> None:
        self.flush()
        if self._local:
            self._file.close()


def _holder_description() -> dict:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(timespec="seconds"),
            "heartbeat": now}


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


class RunLock:
    """The training lock of one workdir (see the module docstring). `acquire` raises
    WorkdirError naming the holder; `release` is safe to call more than once."""

    def __init__(self, workdir: epath.Path):
        self.path = workdir / LOCK_NAME
        self.workdir = workdir
        self._file = None
        self._holder: dict | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> "RunLock":
        self.workdir.mkdir(parents=True, exist_ok=True)
        if is_local(self.path):
            self._acquire_flock()
        else:
            self._acquire_lease()
        return self

    def _refuse(self, holder: dict) -> None:
        raise WorkdirError(
            f"--workdir={os.fspath(self.workdir)!r} is in use by another training run ({_describe(holder)}); "
            f"wait for it to finish, stop it, or choose another --workdir"
        )

    def _acquire_flock(self) -> None:
        import fcntl

        file = open(os.fspath(self.path), "a+", encoding="utf-8")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            try:
                holder = json.loads(file.read() or "{}")
            except ValueError:
                holder = {}
            file.close()
            self._refuse(holder)
        file.seek(0)
        file.truncate()
        file.write(json.dumps(_holder_description()) + "\n")
        file.flush()
        self._file = file

    def _read_lease(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _acquire_lease(self) -> None:
        holder = self._read_lease()
        if holder is not None and time.time() - float(holder.get("heartbeat", 0)) < LEASE_STALE_SECONDS:
            self._refuse(holder)
        self._holder = _holder_description()
        self.path.write_text(json.dumps(self._holder))
        time.sleep(0.5)  # a start racing ours overwrote the lease if it wrote last
        if self._read_lease() != self._holder:
            self._refuse(self._read_lease() or {})
        self._heartbeat = threading.Thread(target=self._beat, daemon=True, name="workdir-lease")
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(LEASE_HEARTBEAT_SECONDS):
            self._holder["heartbeat"] = time.time()
            try:
                self.path.write_text(json.dumps(self._holder))
            except Exception:  # a transient store error; the next beat retries
                pass

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None
        if self._holder is not None:
            self._stop.set()
            if self._heartbeat is not None:
                self._heartbeat.join()
            if self._read_lease() == self._holder:
                self.path.unlink()
            self._holder = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
