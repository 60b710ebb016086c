"""Batches/s of the image stream (genjax.data.images), single process:

    python -m experiments.benchmark_image_data [--batch_size=128] [--num_batches=200] [--repeats=3]

- digits: scikit-learn's 8x8 digits prepared to array_record (its preparation time is
  reported too), read record by record (a PNG decode per example) and decoded once into
  memory (data.in_memory=True);
- folder32: a folder of 2,000 random 32x32x3 PNGs (cifar10's shape and encoding), prepared
  through the image_folder builder, read record by record.

Each is read with `local_batch(step)` in a loop and with the read-ahead iterator `batches()`
(grain threads), random flips on. Medians over --repeats, each over --num_batches batches
after one warm-up batch. A CPU train step of the small U-Net on 8x8x1 at batch 128 runs at
about 20 steps/s on the reference machine: the stream must stay well above that.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

from genjax.data.images.sources import open_digits, open_folder
from genjax.data.images.stream import ImageStream

_BATCH = flags.DEFINE_integer("batch_size", 128, "global batch size")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 200, "batches timed per repeat")
_REPEATS = flags.DEFINE_integer("repeats", 3, "repeats (the median is reported)")


def batches_per_second(stream: ImageStream, num_batches: int, read_ahead: bool) -> float:
    if read_ahead:
        iterator = stream.batches(0)
        next(iterator)
        start = time.perf_counter()
        for _ in range(num_batches):
            next(iterator)
    else:
        stream.local_batch(0)
        start = time.perf_counter()
        for step in range(1, num_batches + 1):
            stream.local_batch(step)
    return num_batches / (time.perf_counter() - start)


def write_random_pngs(root: str, num: int, shape=(32, 32, 3), num_classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(num):
        directory = os.path.join(root, f"class{i % num_classes}")
        os.makedirs(directory, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(os.path.join(directory, f"{i}.png"))


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as data_dir:
        start = time.perf_counter()
        digits = open_digits("train", data_dir)
        print(f"digits: prepared to array_record in {time.perf_counter() - start:.2f} s")
        start = time.perf_counter()
        digits_in_memory = digits.in_memory(("image", "label"))
        print(f"digits: decoded into memory in {time.perf_counter() - start:.2f} s")
        write_random_pngs(f"{data_dir}/folder32", 2000)
        folder = open_folder(f"{data_dir}/folder32", "train", data_dir)
        cases = {"digits 8x8x1, per record": digits, "digits 8x8x1, in memory": digits_in_memory,
                 "folder 32x32x3 PNG, per record": folder}
        print(f"| source | local_batch (batches/s) | batches() read-ahead (batches/s) |  (batch {_BATCH.value})")
        print("|---|---|---|")
        for name, source in cases.items():
            stream = ImageStream(source, _BATCH.value, seed=0, random_flip=True)
            rates = {read_ahead: statistics.median(batches_per_second(stream, _NUM_BATCHES.value, read_ahead)
                                                   for _ in range(_REPEATS.value)) for read_ahead in (False, True)}
            print(f"| {name} | {rates[False]:.0f} | {rates[True]:.0f} |")


if __name__ == "__main__":
    app.run(main)
