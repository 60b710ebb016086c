"""Per-device memory and FLOPs of every CIFAR-10 config's train step on 8 and 64 simulated
devices, through the command a user runs (`--mode=compile`), without any data.

    python -m experiments.benchmark_cifar10_compile --workdir=DIR [--devices=8,64] [--configs=NAME,...]

For each configs/cifar10_*.py and device count it runs

    XLA_FLAGS=--xla_force_host_platform_device_count=N python -m experiments.main \
        --config=configs/NAME.py --mode=compile [overrides]

in a fresh process, reads the printed report, and writes DIR/cifar10_compile.json and .md (one
row per config and layout). Layouts: the config as shipped (pure data parallelism: the global
batch split over N devices, parameters replicated) and FSDP (data x fsdp = N/8 x 8,
sharding.params=fsdp: every leaf of at least data.fsdp_min_size elements, conv kernels
included, split over fsdp along its largest divisible dimension). Compiling a 60M-parameter
U-Net step takes one to two minutes per row on 2 CPU cores.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string("workdir", None, "Where to write cifar10_compile.json and .md.", required=True)
flags.DEFINE_list("devices", ["8", "64"], "Simulated device counts.")
flags.DEFINE_list("configs", [], "Config names (default: every configs/cifar10_*.py config).")
flags.DEFINE_bool("fsdp", True, "Add the FSDP layout (fsdp axis 8) for each config.")
FLAGS = flags.FLAGS

LAYOUTS = {
    "data parallel": [],
    "FSDP (fsdp 8)": ["--config.sharding.params=fsdp", "--config.mesh.fsdp=8"],
}
ROWS = {  # printed name -> JSON field
    "mesh": "mesh", "parameters": "parameters", "parameters per device": "param_bytes",
    "optimizer state per device": "optimizer_bytes", "step arguments per device": "argument_bytes",
    "step temporaries per device": "temp_bytes", "XLA peak estimate per device": "xla_peak_bytes",
    "FLOPs per step per device": "flops_per_step",
}


def cifar10_configs() -> list[str]:
    names = []
    for name in sorted(os.listdir(os.path.join(ROOT, "configs"))):
        path = os.path.join(ROOT, "configs", name)
        if name.startswith("cifar10_") and name.endswith(".py") and "\ndef get_config(" in open(path).read():
            names.append(name[:-3])
    return names


def parse_report(text: str) -> dict:
    """The `--mode=compile` table (name, two or more spaces, value) as a dict of JSON fields."""
    report = {}
    for line in text.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) == 2 and parts[0] in ROWS:
            report[ROWS[parts[0]]] = parts[1]
    return report


def compile_row(name: str, devices: int, overrides: list[str]) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "experiments.main", f"--config=configs/{name}.py", "--mode=compile", *overrides]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"config": name, "devices": devices, "error": tail, "seconds": seconds}
    return {"config": name, "devices": devices, "seconds": seconds, **parse_report(result.stdout)}


def markdown(rows: list[dict]) -> str:
    lines = ["| config | layout | devices | parameters | params / device | Adam state / device | temporaries / device "
             "| XLA peak / device | FLOPs / step / device | compile (s) |", "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['layout']} | {r['devices']} | error: {r['error']} |||||| {r['seconds']:.0f} |")
            continue
        lines.append(f"| {r['config']} | {r['layout']} | {r['devices']} | {r['parameters']} | {r['param_bytes']} | "
                     f"{r['optimizer_bytes']} | {r['temp_bytes']} | {r['xla_peak_bytes']} | {r['flops_per_step']} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    os.makedirs(FLAGS.workdir, exist_ok=True)
    rows = []
    for name in FLAGS.configs or cifar10_configs():
        for devices in (int(n) for n in FLAGS.devices):
            layouts = LAYOUTS if FLAGS.fsdp and devices % 8 == 0 else {"data parallel": []}
            for layout, overrides in layouts.items():
                row = {"layout": layout, **compile_row(name, devices, overrides)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                with open(os.path.join(FLAGS.workdir, "cifar10_compile.json"), "w") as f:
                    json.dump(rows, f, indent=1)
                with open(os.path.join(FLAGS.workdir, "cifar10_compile.md"), "w") as f:
                    f.write(markdown(rows) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    app.run(main)
