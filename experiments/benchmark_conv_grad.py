"""The convolution kernel gradient on this device: XLA's backward-filter convolution against
the tap-wise matrix products of genjax/nets/unet/conv_weight_grad.py, and a U-Net train step
with each (medians of alternating repeats, ratios per repeat).

    python -m experiments.benchmark_conv_grad [--repeats=3] [--steps=3]

Rows: the kernel gradient alone for the 3x3 convolutions of the CIFAR-10 DDPM++ network at its
three widths (batch 16), then the train step of configs/digits.py's U-Net (batch 128, 8x8x1)
and of the CIFAR-10 DDPM++ network on 32x32x3 (batch 8), with `tap_kernel_gradient` True and
False (forward pass and input gradient are XLA's in both).
"""
from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from jax import lax

from genjax.nets.unet.conv_weight_grad import kernel_gradient_by_taps

flags.DEFINE_integer("repeats", 3, "Alternating repeats.")
flags.DEFINE_integer("steps", 3, "Train steps per timing of a U-Net step.")
FLAGS = flags.FLAGS
NHWC = ("NHWC", "HWIO", "NHWC")
PAD = ((1, 1), (1, 1))


def best_time(fn, *args, calls: int = 3) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def kernel_gradient_pair(batch, size, channels):
    x = jax.random.normal(jax.random.key(0), (batch, size, size, channels))
    w = jax.random.normal(jax.random.key(1), (3, 3, channels, channels)) * 0.05
    dy = jax.random.normal(jax.random.key(2), (batch, size, size, channels))

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), PAD, dimension_numbers=NHWC)

    xla = jax.jit(lambda x, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])
    taps = jax.jit(lambda x, dy: kernel_gradient_by_taps(x, dy, w.shape, (1, 1), PAD))
    return (lambda: best_time(xla, x, dy)), (lambda: best_time(taps, x, dy))


def unet_step_pair(config_name, resolution, channels, batch):
    import importlib

    from experiments.benchmark_flops import synthetic_batch
    from genjax.experiment import build_experiment

    timers = []
    for taps in (False, True):
        config = importlib.import_module(f"configs.{config_name}").get_config()
        config.data.resolution, config.data.channels = resolution, channels
        config.training.batch_size, config.mesh.data = batch, 1
        config.model.kwargs = {**config.model.kwargs, "tap_kernel_gradient": taps}
        experiment = build_experiment(config, jax.devices()[:1])
        step = experiment.jitted_train_step()
        data = synthetic_batch(experiment)
        holder = {"state": experiment.init_state()}

        def timed(step=step, data=data, holder=holder):
            holder["state"], metrics = step(holder["state"], data)  # compiled on the first call
            metrics["loss"].block_until_ready()
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                holder["state"], metrics = step(holder["state"], data)
            metrics["loss"].block_until_ready()
            return (time.perf_counter() - start) / FLAGS.steps

        timers.append(timed)
    return tuple(timers)


def main(argv):
    del argv
    rows = {f"3x3 conv kernel gradient, batch 16, {s}x{s}x{c}": kernel_gradient_pair(16, s, c)
            for s, c in ((32, 128), (16, 256), (8, 256))}
    rows["train step, configs/digits.py U-Net, batch 128"] = unet_step_pair("digits", 8, 1, 128)
    rows["train step, CIFAR-10 DDPM++ (61.8M), 32x32x3, batch 8"] = unet_step_pair("cifar10_ddpmpp", 32, 3, 8)
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}; seconds (median of {FLAGS.repeats} alternating "
          "repeats) and XLA / taps per repeat\n")
    print(f"| what | XLA backward-filter (s) | tap-wise (s) | XLA / taps | runs |\n|---|---|---|---|---|")
    for name, (xla, taps) in rows.items():
        pairs = [(xla(), taps()) for _ in range(FLAGS.repeats)]
        ratios = [a / b for a, b in pairs]
        print(f"| {name} | {statistics.median(a for a, _ in pairs):.3f} | {statistics.median(b for _, b in pairs):.3f} | "
              f"{statistics.median(ratios):.2f} | {', '.join(f'{r:.2f}' for r in ratios)} |", flush=True)


if __name__ == "__main__":
    app.run(main)
