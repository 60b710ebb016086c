"""The PyTorch side of experiments/benchmark_flow_matching.py: torchcfm's 2-D tutorial training
step, timed (standalone: numpy, torch, torchcfm and POT only; run it with a Python that has
them, never the project's environment).

    python experiments/benchmark_torchcfm.py [--steps=300] [--repeats=3] [--threads=N]

The setting of torchcfm's 2-D tutorial: an MLP (x, t) -> v of three hidden layers of 64 SELU
units, batch 256, Adam at 1e-3, source N(0, I), the 8-Gaussians target (radius 2 sqrt 2 ...
here of radius 2 with std 0.5: the data only decides the coupling's cost matrix, not the
work). One step: draw the two minibatches, `sample_location_and_conditional_flow` of
torchcfm's `ConditionalFlowMatcher` (I-CFM, sigma = 0) or
`ExactOptimalTransportConditionalFlowMatcher` (OT-CFM: POT's exact EMD on the host, then
pairs drawn from the plan), the squared error, backward and the Adam update. The two
matchers alternate `repeats` times; the median steps/s of each is printed as one JSON line
{"icfm": steps/s, "otcfm": steps/s, "runs": {...}, "torch": version, "threads": n}.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np

try:
    import torch
    from torchcfm.conditional_flow_matching import (ConditionalFlowMatcher,
                                                    ExactOptimalTransportConditionalFlowMatcher)
except ImportError as error:
    sys.stderr.write(f"error: {error}; run this script with a Python that has torch, torchcfm and POT "
                     "(pip install torch torchcfm pot in a virtualenv of its own)\n")
    sys.exit(2)

DIM, WIDTH, BATCH = 2, 64, 256


def tutorial_mlp() -> torch.nn.Module:
    """(x, t) concatenated -> 64 -> 64 -> 64 -> 2, SELU between layers."""
    return torch.nn.Sequential(
        torch.nn.Linear(DIM + 1, WIDTH), torch.nn.SELU(),
        torch.nn.Linear(WIDTH, WIDTH), torch.nn.SELU(),
        torch.nn.Linear(WIDTH, WIDTH), torch.nn.SELU(),
        torch.nn.Linear(WIDTH, DIM),
    )


def eight_gaussians(n: int) -> torch.Tensor:
    centers = torch.tensor([(math.cos(a), math.sin(a)) for a in np.arange(8) * math.pi / 4]) * 2.0
    return centers[torch.randint(0, 8, (n,))] + 0.5 * torch.randn(n, DIM)


def steps_per_second(matcher, steps: int) -> float:
    model = tutorial_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad()
        x0, x1 = torch.randn(BATCH, DIM), eight_gaussians(BATCH)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        vt = model(torch.cat([xt, t[:, None]], dim=-1))
        loss = torch.mean((vt - ut) ** 2)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(10):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        sys.stderr.write(f"error: --steps={args.steps} and --repeats={args.repeats} must be >= 1\n")
        sys.exit(2)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    matchers = {"icfm": ConditionalFlowMatcher(sigma=0.0), "otcfm": ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)}
    runs = {name: [] for name in matchers}
    for _ in range(args.repeats):
        for name, matcher in matchers.items():
            runs[name].append(steps_per_second(matcher, args.steps))
    result = {name: statistics.median(values) for name, values in runs.items()}
    print(json.dumps({**result, "runs": runs, "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
