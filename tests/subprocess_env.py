"""The environment of a child JAX process that a test starts (the command line end to end)."""
import os

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def cpu_environment(devices: int, **extra: str) -> dict:
    """os.environ for a child on `devices` simulated CPU devices that keeps the test run's other
    XLA flags (the default run's compilation level, tests/conftest.py)."""
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split() if not flag.startswith(DEVICE_COUNT_FLAG)]
    return dict(os.environ, XLA_FLAGS=" ".join([*flags, f"{DEVICE_COUNT_FLAG}={devices}"]), JAX_PLATFORMS="cpu",
                **extra)
