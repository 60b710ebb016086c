"""Every performance figure the README quotes, measured in one run:

    python -m experiments.benchmark --workdir=DIR [--parts=default_run,train_loop,flops,memory] [--repeats=3]

writes DIR/benchmark.json (every run of every measurement) and DIR/benchmark.md (the README's
table: medians, with the runs beside them). Running some `--parts` updates those sections of
an existing benchmark.json and rewrites the table.

- default_run: wall time of the default experiment, end to end (`experiments.main`, a fresh
  workdir), and its training rate from its metrics.jsonl.
- train_loop: steps/s of a plain `jax.jit` step, the sharded step and the full loop
  (experiments/benchmark_train_loop.py), alternating; the ratios loop / sharded step and
  sharded / plain are taken per repeat, then the median.
- flops: the f32 matmul peak of the device and the FLOP/s of the default and 55M-parameter
  train steps, alternating; FLOP/s over the peak per repeat, then the median.
- unet_flops: the f32 matmul peak and the FLOP/s of the DDPM++ CIFAR-10 network's train step
  (configs/cifar10_ddpmpp.py; 61.8M parameters) on digits-sized (8x8x1, batch 128) and
  CIFAR-sized (32x32x3, batch 16) inputs on one device, alternating; a batch of the right
  shapes stands in for the data. FLOP/s over the peak per repeat, then the median.
- memory: per-device bytes of the 55M-parameter step at 1/2/4/8 devices, data parallel, FSDP
  and FSDP x tensor (experiments/benchmark_memory.py); run in a subprocess with simulated CPU
  devices when this process has too few.

Ratios are what to quote from a shared machine: the two sides of each are measured
back to back, so load that comes and goes cancels in the median.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

PARTS = ("default_run", "train_loop", "flops", "unet_flops", "memory")
MEMORY_CONFIG = "configs/mlp_50m.py"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

config_flags.DEFINE_config_file("config", "configs/default.py", "The default experiment's config.", lock_config=False)
config_flags.DEFINE_config_file("large_config", MEMORY_CONFIG, "The large config (FLOP/s and memory).",
                                lock_config=False)
flags.DEFINE_string("workdir", None, "Where benchmark.json and benchmark.md go.")
flags.DEFINE_list("parts", list(PARTS), f"Parts to measure: {', '.join(PARTS)}.")
flags.DEFINE_integer("repeats", 3, "Alternating repeats of each timed measurement.")
flags.DEFINE_integer("steps", 300, "Steps per train-loop measurement.")
flags.DEFINE_integer("flops_steps", 100, "Steps per FLOP/s measurement of the default config.")
flags.DEFINE_integer("large_flops_steps", 2, "Steps per FLOP/s measurement of the large config.")
flags.DEFINE_integer("unet_steps", 3, "Steps per FLOP/s measurement of each U-Net step.")
flags.DEFINE_list("memory_devices", ["1", "2", "4", "8"], "Device counts for the memory part.")
flags.DEFINE_string("memory_out", None, "Internal: write only the memory rows to this JSON file.")
FLAGS = flags.FLAGS


def fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "runs": values}


def ratios(numerators: list[float], denominators: list[float]) -> dict:
    return summary([a / b for a, b in zip(numerators, denominators)])


# --- parts ----------------------------------------------------------------------------------------
def default_run() -> dict:
    """The README's first command, timed from the outside."""
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, "-m", "experiments.main", "--config=configs/default.py", f"--workdir={workdir}/run"]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            fail(f"the default experiment failed (status {result.returncode}): {result.stderr.strip()[-300:]}")
        records = [json.loads(line) for line in open(os.path.join(workdir, "run", "metrics.jsonl"))]
    rates = [r["steps_per_second"] for r in records[1:]]  # the first interval holds the compilation
    return {"command": "python -m experiments.main --config=configs/default.py --workdir=DIR",
            "wall_seconds": wall, "training_steps_per_second": summary(rates)}


def train_loop(config) -> dict:
    from experiments.benchmark_train_loop import measure_train_loop

    runs = measure_train_loop(config, FLAGS.steps, FLAGS.repeats)
    return {"steps": FLAGS.steps, "repeats": FLAGS.repeats,
            **{name: summary(values) for name, values in runs.items()},
            "loop_over_sharded": ratios(runs["loop"], runs["sharded"]),
            "sharded_over_plain": ratios(runs["sharded"], runs["plain"])}


def flops(config, large_config) -> dict:
    from experiments.benchmark_flops import matmul_flops_per_second, step_timer

    steps = {"default": FLAGS.flops_steps, "large": FLAGS.large_flops_steps}
    timers = {"default": step_timer(config), "large": step_timer(large_config)}
    peak, rates = [], {name: [] for name in timers}
    for _ in range(FLAGS.repeats):
        peak.append(matmul_flops_per_second())
        for name, (_, measure) in timers.items():
            rates[name].append(measure(steps[name]))
    return {"matmul_peak_flops_per_second": summary(peak),
            **{name: {"flops_per_step": timers[name][0], "steps": steps[name],
                      "flops_per_second": summary(rates[name]), "over_peak": ratios(rates[name], peak)}
               for name in timers}}


def unet_flops() -> dict:
    from experiments.benchmark_flops import matmul_flops_per_second, step_timer, unet_configs

    timers = {name: step_timer(config, synthetic=True) for name, config in unet_configs().items()}
    peak, rates = [], {name: [] for name in timers}
    for _ in range(FLAGS.repeats):
        peak.append(matmul_flops_per_second())
        for name, (_, measure) in timers.items():
            rates[name].append(measure(FLAGS.unet_steps))
    return {"config": "configs/cifar10_ddpmpp.py", "matmul_peak_flops_per_second": summary(peak),
            "steps": FLAGS.unet_steps,
            "inputs": {name: {"flops_per_step": timers[name][0], "flops_per_second": summary(rates[name]),
                              "over_peak": ratios(rates[name], peak)} for name in timers}}


def memory(large_config) -> dict:
    import jax

    counts = [int(n) for n in FLAGS.memory_devices]
    if FLAGS.memory_out or jax.device_count() >= max(counts):
        from experiments.benchmark_memory import memory_rows
        rows = memory_rows(large_config, counts)
        stats = jax.devices()[0].memory_stats() is not None
        return {"config": MEMORY_CONFIG, "platform": jax.devices()[0].platform, "device_memory_stats": stats,
                "global_batch": rows[0]["global_batch"], "rows": rows}
    # This process has too few devices: a child with simulated CPU devices measures them.
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "memory.json")
        env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                   f"--xla_force_host_platform_device_count={max(counts)}", JAX_PLATFORMS="cpu")
        command = [sys.executable, "-m", "experiments.benchmark", f"--workdir={scratch}", "--parts=memory",
                   f"--memory_out={out}", f"--memory_devices={','.join(map(str, counts))}"]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"the memory part failed (status {result.returncode}): {result.stderr.strip()[-300:]}")
        return json.load(open(out))


# --- the table --------------------------------------------------------------------------------------
def _runs(values, fmt="{:.2f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.1f}"


def _xla_total(row: dict):
    parts = [row["argument_bytes"], row["temp_bytes"], row["output_bytes"], row["alias_bytes"]]
    return None if None in parts else parts[0] + parts[1] + parts[2] - parts[3]


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [f"Measured {machine['date']} on {machine['device']} ({machine['cpu_count']} CPU cores"
             f"{'; ' + machine['note'] if machine.get('note') else ''}) with "
             f"`python -m experiments.benchmark --repeats={machine['repeats']}`: medians of alternating repeats, "
             "each run listed.", "", "| what | figure | runs |", "|---|---|---|"]
    if "default_run" in results:
        run = results["default_run"]
        lines.append(f"| default experiment, end to end (`{run['command']}`) | {run['wall_seconds']:.0f} s wall | 1 run |")
        lines.append(f"| its training rate (metrics.jsonl, intervals after the first) | "
                     f"{run['training_steps_per_second']['median']:.0f} steps/s | "
                     f"{_runs(run['training_steps_per_second']['runs'], '{:.0f}')} |")
    if "train_loop" in results:
        loop = results["train_loop"]
        each = f"{loop['steps']} steps each"
        lines += [
            f"| training throughput of the default config, full loop | {loop['loop']['median']:.0f} steps/s | "
            f"{_runs(loop['loop']['runs'], '{:.0f}')} ({each}) |",
            f"| loop efficiency: full loop (data, logging, async checkpoints) / bare sharded jitted step | "
            f"{loop['loop_over_sharded']['median']:.2f} | {_runs(loop['loop_over_sharded']['runs'])} |",
            f"| sharded code path on one device / plain `jax.jit` of the same step | "
            f"{loop['sharded_over_plain']['median']:.2f} | {_runs(loop['sharded_over_plain']['runs'])} |",
        ]
    if "flops" in results:
        f = results["flops"]
        lines.append(f"| f32 matmul peak (`jnp.dot`, 2048 square) | "
                     f"{f['matmul_peak_flops_per_second']['median'] / 1e9:.0f} GFLOP/s | "
                     f"{_runs([v / 1e9 for v in f['matmul_peak_flops_per_second']['runs']], '{:.0f}')} |")
        for name, what in (("default", "default config"), ("large", "55M-parameter config (configs/mlp_50m.py)")):
            lines.append(f"| train step FLOP/s / matmul peak, {what} ({f[name]['flops_per_step'] / 1e9:.2f} GFLOP "
                         f"per step) | {f[name]['over_peak']['median']:.3f} | {_runs(f[name]['over_peak']['runs'], '{:.3f}')} |")
    if "unet_flops" in results:
        u = results["unet_flops"]
        lines.append(f"| f32 matmul peak, U-Net part (`jnp.dot`, 2048 square) | "
                     f"{u['matmul_peak_flops_per_second']['median'] / 1e9:.0f} GFLOP/s | "
                     f"{_runs([v / 1e9 for v in u['matmul_peak_flops_per_second']['runs']], '{:.0f}')} |")
        for name, row in u["inputs"].items():
            lines.append(f"| DDPM++ CIFAR-10 train step FLOP/s / matmul peak, {name} "
                         f"({row['flops_per_step'] / 1e9:.0f} GFLOP per step) | {row['over_peak']['median']:.3f} | "
                         f"{_runs(row['over_peak']['runs'], '{:.3f}')} |")
    if "memory" in results:
        m = results["memory"]
        one = next(r["state_bytes_per_device"] for r in m["rows"] if r["devices"] == 1)
        measured = ("the device's peak after one real step" if m["device_memory_stats"] else
                    f"n/a: {m['platform']} keeps no memory statistics (device.memory_stats() is None)")
        lines += ["", f"Per-device memory of the train step, {m['config']} "
                  f"({m['rows'][0]['parameters'] / 1e6:.1f}M parameters, global batch {m['global_batch']}; compiled, "
                  f"not run, on {m['platform']} devices). 'State' is the shard-shape estimate (parameters + EMA + "
                  "Adam); the next columns are XLA's accounting of the compiled step (total: arguments + temporaries "
                  "+ outputs not donated into the arguments' buffers; XLA's own peak estimate beside it); measured peak: "
                  f"{measured}. MiB per device.", "",
                  "| layout | devices | mesh (data x fsdp x tensor) | state (shard shapes) | x of 1 device | XLA arguments "
                  "| XLA outputs (donated) | XLA temporaries | XLA total | XLA peak estimate | measured peak |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in m["rows"]:
            mesh = r["mesh"]
            lines.append(
                f"| {r['layout']} | {r['devices']} | {mesh['data']} x {mesh['fsdp']} x {mesh['tensor']} | "
                f"{_mib(r['state_bytes_per_device'])} | {r['state_bytes_per_device'] / one:.3f} | "
                f"{_mib(r['argument_bytes'])} | {_mib(r['output_bytes'])} ({_mib(r['alias_bytes'])}) | "
                f"{_mib(r['temp_bytes'])} | {_mib(_xla_total(r))} | {_mib(r['xla_peak_bytes'])} | "
                f"{_mib(r['measured_peak_bytes'])} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    unknown = sorted(set(FLAGS.parts) - set(PARTS))
    if unknown:
        fail(f"--parts: {unknown} are not known; valid parts: {', '.join(PARTS)}")
    if not FLAGS.workdir:
        fail("--workdir is required: where benchmark.json and benchmark.md go")
    if FLAGS.repeats < 1:
        fail(f"--repeats={FLAGS.repeats} must be at least 1")
    if FLAGS.memory_out:  # the child of memory(): simulated devices, memory rows only
        with open(FLAGS.memory_out, "w") as f:
            json.dump(memory(FLAGS.large_config), f)
        return
    os.makedirs(FLAGS.workdir, exist_ok=True)
    path = os.path.join(FLAGS.workdir, "benchmark.json")
    results = json.load(open(path)) if os.path.exists(path) else {}

    import jax
    device = jax.devices()[0]
    results["machine"] = {
        "date": datetime.date.today().isoformat(), "device": f"{jax.device_count()} x {device.device_kind}",
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
        "repeats": FLAGS.repeats, "note": os.environ.get("BENCHMARK_NOTE", ""),
    }
    for part in [p for p in PARTS if p in FLAGS.parts]:
        print(f"measuring {part} ...", flush=True)
        start = time.perf_counter()
        if part == "default_run":
            results[part] = default_run()
        elif part == "train_loop":
            results[part] = train_loop(FLAGS.config)
        elif part == "flops":
            results[part] = flops(FLAGS.config, FLAGS.large_config)
        elif part == "unet_flops":
            results[part] = unet_flops()
        else:
            results[part] = memory(FLAGS.large_config)
        results[part]["seconds"] = time.perf_counter() - start
        print(f"  {results[part]['seconds']:.0f} s", flush=True)
        with open(path, "w") as f:  # after every part, so an interrupted run keeps what it measured
            json.dump(results, f, indent=1)
    table = markdown(results)
    with open(os.path.join(FLAGS.workdir, "benchmark.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    app.run(main)
