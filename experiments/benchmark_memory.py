"""Per-device memory of the train step under pure data parallelism and under FSDP.

    python -m experiments.benchmark_memory [--config=configs/mlp_50m.py] [--devices=1,2,4,8]

Compiles (never runs) the train step on meshes of simulated CPU devices and prints, per
device: parameter + EMA + optimizer-state bytes (from the shardings) and XLA's argument and
temporary bytes of the compiled executable. Under FSDP the state should fall close to 1/N.
"""
from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from genjax.experiment import build_experiment  # noqa: E402
from genjax.train.compile_report import compile_report  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/mlp_50m.py", "Experiment config.", lock_config=False)
flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Device counts to compile for.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    config = FLAGS.config
    config.training.batch_size = 8 * (config.training.batch_size // 8)
    rows = []
    for layout in ("replicated", "fsdp"):
        for n in map(int, FLAGS.devices):
            config.sharding.params = layout
            config.mesh.data, config.mesh.fsdp = (n, 1) if layout == "replicated" else (1, n)
            report = compile_report(build_experiment(config, jax.devices()[:n]))
            state = report["param_bytes_per_device"] + report["ema_bytes_per_device"] + report["optimizer_bytes_per_device"]
            rows.append((layout, n, report["parameters"], state, report["argument_bytes"], report["temp_bytes"]))
    base = {layout: state for layout, n, _, state, _, _ in rows if n == 1}
    print(f"config: {FLAGS.config.model.name} {dict(FLAGS.config.model.kwargs)}, global batch {config.training.batch_size}")
    print("| layout | devices | parameters | params+EMA+Adam per device | x of 1 device | step arguments | step temporaries |")
    print("|---|---|---|---|---|---|---|")
    for layout, n, params, state, arguments, temporaries in rows:
        print(f"| {layout} | {n} | {params / 1e6:.1f}M | {state / 2**20:,.1f} MiB | {state / base[layout]:.3f} | "
              f"{arguments / 2**20:,.1f} MiB | {temporaries / 2**20:,.1f} MiB |")


if __name__ == "__main__":
    app.run(main)
