"""Test configuration: 8 simulated CPU devices, so sharding tests run in-process.

Computations that name no device run on device 0 as usual; tests that need a mesh build
one over `jax.devices()[:n]`.

The test processes of one run (pytest-xdist workers) share a persistent JAX compilation
cache that starts empty: many tests build the same tiny experiments and samplers as fresh
closures (or run them in subprocesses, which inherit the setting through the environment),
which retrace but then load the compiled program instead of compiling it again. It lives in
the system's temporary directory under the run's id and is removed at the end.
"""
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"

_RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"single-{os.getpid()}"
COMPILATION_CACHE_DIR = os.path.join(tempfile.gettempdir(), f"genjax-test-compilation-cache-{_RUN_ID}")
os.environ.update(JAX_COMPILATION_CACHE_DIR=COMPILATION_CACHE_DIR, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)


def pytest_sessionfinish(session):
    """The controlling process (not an xdist worker) removes the run's cache."""
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(COMPILATION_CACHE_DIR, ignore_errors=True)
