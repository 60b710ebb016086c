"""The PyTorch + torchdiffeq side of experiments/benchmark_sampling.py (standalone: numpy, torch,
torchdiffeq only; run with a Python that has them, never the project's environment).

    python experiments/benchmark_torchdiffeq.py --weights=FILE.npz [--threads=N]

FILE.npz (written by benchmark_sampling.py) holds the trained TimeConditionedMLP's weights
(`Dense_<i>/kernel`, `Dense_<i>/bias`, numbered in flax's creation order), the VP SDE's beta_min,
beta_max, t_max, t_min, the prior draws x_T [N, 2], rtol, atol, solver, em_steps. The same
network is rebuilt here in torch (a noise-predicting MLP read as the probability-flow velocity
v = -beta(t) (x - noise / sigma(t)) / 2 of the VP SDE), then:

  * dopri5: `torchdiffeq.odeint` from t_max to t_min on the whole batch (one step size for
    the batch, RMS error norm over all entries), NFE counted in the field;
  * euler_maruyama: em_steps reverse-SDE Euler-Maruyama steps on the uniform grid, then
    Tweedie's denoising (NFE = em_steps + 1), as genjax's sampler does.

Prints one JSON line: {"dopri5": {"seconds", "nfe"}, "euler_maruyama": {"seconds", "nfe"},
"torch": version, "threads"}; the dopri5 samples go to --samples_out (npz) if given.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch
import torchdiffeq


def load_network(weights):
    layers = sorted({int(k.split("/")[0].split("_")[1]) for k in weights.files if k.startswith("Dense_")})
    dense = [(torch.from_numpy(weights[f"Dense_{i}/kernel"]), torch.from_numpy(weights[f"Dense_{i}/bias"]))
             for i in layers]
    embedding_dim, time_scale = int(weights["embedding_dim"]), float(weights["time_scale"])
    num_blocks = (len(dense) - 4) // 3
    half = embedding_dim // 2
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
    silu = torch.nn.functional.silu

    def linear(i, h):
        kernel, bias = dense[i]
        return torch.addmm(bias, h, kernel)

    def network(x, t):
        """TimeConditionedMLP (genjax/nets/mlp.py) with the sinusoidal embedding: x [B, D], t [B]."""
        angles = (t * time_scale)[:, None] * frequencies[None, :]
        emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        emb = linear(0, silu(linear(1, emb)))  # flax names the outer Dense first
        h = linear(2, x) + emb
        for block in range(num_blocks):
            first = 3 + 3 * block
            residual = silu(linear(first, silu(h)) + linear(first + 1, silu(emb)))
            h = h + linear(first + 2, residual)
        return linear(len(dense) - 1, silu(h))

    return network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="the .npz written by benchmark_sampling.py")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--samples_out", default="", help="write the dopri5 samples here (npz)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        weights = np.load(args.weights)
    except OSError as error:
        sys.stderr.write(f"error: --weights={args.weights!r} cannot be read ({error}); write it with "
                         "python -m experiments.benchmark_sampling first\n")
        sys.exit(2)
    network = load_network(weights)
    beta_min, beta_max = float(weights["beta_min"]), float(weights["beta_max"])
    t_max, t_min = float(weights["t_max"]), float(weights["t_min"])
    x_T = torch.from_numpy(weights["x_T"])

    def coefficients(t):
        beta = beta_min + t * (beta_max - beta_min)
        log_alpha = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
        return beta, torch.exp(log_alpha), torch.sqrt(-torch.expm1(2.0 * log_alpha))

    count = [0]

    def velocity(t, x):
        count[0] += 1
        # torchdiffeq's last step may overshoot t_min and interpolate back; below t = 0 the VP
        # field is undefined (sigma^2 < 0), so the field is held at t_min there.
        t_batch = torch.full((x.shape[0],), max(float(t), t_min), dtype=x.dtype)
        beta, _, sigma = coefficients(t_batch[:1])
        noise = network(x, t_batch)
        return -0.5 * beta * (x - noise / sigma)

    def probability_flow():
        count[0] = 0
        times = torch.tensor([t_max, t_min], dtype=torch.float32)
        samples = torchdiffeq.odeint(velocity, x_T, times, method=str(weights["solver"]),
                                     rtol=float(weights["rtol"]), atol=float(weights["atol"]))[-1]
        return samples, count[0]

    def euler_maruyama(steps: int):
        generator = torch.Generator().manual_seed(0)
        grid = torch.linspace(t_max, t_min, steps + 1)
        x = x_T.clone()
        for i in range(steps):
            t, h = grid[i], grid[i] - grid[i + 1]
            t_batch = torch.full((x.shape[0],), float(t))
            beta, _, sigma = coefficients(t)
            score = -network(x, t_batch) / sigma
            x = x + h * beta * (0.5 * x + score) + torch.sqrt(beta * h) * torch.randn(x.shape, generator=generator)
        _, alpha, sigma = coefficients(grid[-1])
        noise = network(x, torch.full((x.shape[0],), float(grid[-1])))
        return (x - sigma * noise) / alpha, steps + 1

    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        for _ in range(3):  # warm-up (allocator, thread pool)
            network(x_T, torch.full((x_T.shape[0],), t_max))
        start = time.perf_counter()
        samples, nfe = probability_flow()
        results["dopri5"] = {"seconds": time.perf_counter() - start, "nfe": nfe}
        start = time.perf_counter()
        _, nfe = euler_maruyama(int(weights["em_steps"]))
        results["euler_maruyama"] = {"seconds": time.perf_counter() - start, "nfe": nfe}
    if args.samples_out:
        np.savez(args.samples_out, samples=samples.numpy())
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
