"""Test configuration: 8 simulated CPU devices, so sharding tests run in-process.

Computations that name no device run on device 0 as usual; tests that need a mesh build
one over `jax.devices()[:n]`.
"""
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
