"""Per-device memory of one sampling chunk: it follows config.sampling.chunk_size, not the
size of the sample set, on 1 device and on 8 with FSDP parameters.

    python -m experiments.benchmark_sampling_memory [--config=configs/digits.py] [--cifar_unet]
        [--chunk_sizes=64,256,1024] [--num_samples=5000,50000] [--devices=1,8]

Compiles (never runs) the chunk program of `genjax.evaluate.sampling` ahead of time for each
mesh and reads XLA's per-device bytes: arguments (the parameters' shards), outputs (the
chunk's samples) and temporaries (the gathered parameters and the solver's activations), and
their sum, an upper bound of the program's footprint (XLA:CPU's own peak estimate leaves the
temporaries out). --cifar_unet turns the config into CIFAR-10's size (32x32x3 images,
the DDPM++ defaults: 128 channels, multipliers (1, 2, 2, 2), 4 blocks per level, attention at
16x16; about 62M parameters) with score_sde's 1000 Euler-Maruyama steps. On 1 device the
parameters are replicated; on more they are FSDP-sharded (mesh fsdp=n, sharding.params=fsdp),
as a model trained under FSDP arrives. Simulated CPU devices are set up when jax has not
started yet (XLA_FLAGS).
"""
from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import math  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/digits.py", "The experiment config.", lock_config=False)
flags.DEFINE_bool("cifar_unet", False, "Resize the config to a CIFAR-10 image and the DDPM++ CIFAR-10 U-Net.")
flags.DEFINE_list("chunk_sizes", ["64", "256", "1024"], "config.sampling.chunk_size values (0: the whole set).")
flags.DEFINE_list("num_samples", ["5000", "50000"], "Sample-set sizes.")
flags.DEFINE_list("devices", ["1", "8"], "Device counts (1: replicated parameters; more: FSDP).")
FLAGS = flags.FLAGS


def cifar_sized(config):
    """The config at CIFAR-10's image size with the DDPM++ CIFAR-10 network and 1000 EM steps."""
    config.data.resolution, config.data.channels = 32, 3
    config.model.name = "ddpmpp"
    config.model.kwargs = dict(model_channels=128, channel_mult=(1, 2, 2, 2), num_blocks=4, attn_resolutions=(16,),
                               dropout=0.1)
    config.sampling.sampler = "euler_maruyama"
    config.samplers.euler_maruyama.num_steps = 1000
    config.evaluate.nll_num_points = 0
    return config


def memory_row(config, devices: int, num_samples: int, chunk_size: int) -> dict:
    import jax

    from genjax.evaluate.sampling import chunk_memory
    from genjax.experiment import build_experiment

    config = config.copy_and_resolve_references()
    config.mesh.data, config.mesh.fsdp = (1, devices) if devices > 1 else (1, 1)
    config.sharding.params = "fsdp" if devices > 1 else "replicated"
    config.sampling.num_samples, config.sampling.chunk_size = num_samples, chunk_size
    experiment = build_experiment(config, jax.devices()[:devices])
    params = experiment.abstract_state().ema_params
    began = time.perf_counter()
    memory = chunk_memory(experiment, params, config.sampling.sampler, num_samples, chunk_size)
    num_params = sum(leaf.size for leaf in jax.tree.leaves(params))
    shard_bytes = sum(leaf.dtype.itemsize * math.prod(leaf.sharding.shard_shape(leaf.shape))
                      for leaf in jax.tree.leaves(params))
    return dict(devices=devices, params=config.sharding.params, num_params=num_params, num_samples=num_samples,
                chunk_size=chunk_size, param_shard_bytes=shard_bytes, compile_seconds=time.perf_counter() - began,
                **memory)


def mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def table(rows: list[dict]) -> str:
    lines = ["| devices | parameters | samples | chunk_size | chunk (padded) | parameter shard MiB | arguments MiB "
             "| outputs MiB | temporaries MiB | total MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        parts = (r["argument"], r["output"], r["temp"])
        total = None if None in parts else sum(parts)
        lines.append(f"| {r['devices']} | {r['params']} | {r['num_samples']:,} | {r['chunk_size']} | {r['chunk']:,} "
                     f"| {mib(r['param_shard_bytes'])} | {mib(r['argument'])} | {mib(r['output'])} "
                     f"| {mib(r['temp'])} | {mib(total)} |")
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    config = FLAGS.config
    if FLAGS.cifar_unet:
        config = cifar_sized(config)
    rows = []
    for devices in (int(n) for n in FLAGS.devices):
        for num_samples in (int(n) for n in FLAGS.num_samples):
            for chunk_size in (int(n) for n in FLAGS.chunk_sizes):
                row = memory_row(config, devices, num_samples, chunk_size)
                print(f"compiled: {devices} device(s), {num_samples} samples, chunk {chunk_size} "
                      f"({row['compile_seconds']:.0f} s)", flush=True)
                rows.append(row)
    print(f"{config.model.name}, {rows[0]['num_params']:,} parameters, {config.sampling.sampler}, data "
          f"{config.data.resolution}x{config.data.resolution}x{config.data.channels}; bytes per device:")
    print(table(rows), flush=True)


if __name__ == "__main__":
    app.run(main)
