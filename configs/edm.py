"""EDM (Karras et al. 2022) on the 2-D checkerboard: sigma(t) = t, s(t) = 1, the
preconditioned denoiser (c_skip, c_out, c_in, c_noise), the log-normal training noise and
the lambda(sigma) weighting, with sigma_data set to the data's standard deviation (2.31)
and the noise range scaled to the data (sigma_max = 20, p_mean = -1.2 + ln(2.31 / 0.5)).

    python -m experiments.main --config=configs/edm.py --workdir=runs/edm

Hardware: 2 CPU cores. Expected: about 2 min. Euler-Maruyama (501 NFE on the rho = 7 grid of
the process's time_grid) SWD 0.074, MMD 0.0003 (noise floor 0.064 / 0.00006; prior 17.8 /
0.37; the exact score on the same grid and draws: 0.065 / 0.0001); probability flow (about
141 NFE) SWD 0.092, MMD 0.0006; NLL 1.778 +- 0.003 nats/dim (true 1.733). See
docs/toy_vs_oracle for every toy config beside the exact score.
"""
from configs import default


def get_config():
    config = default.get_config()
    config.process.name = "edm"
    config.process.kwargs = {"sigma_min": 0.002, "sigma_max": 20.0, "sigma_data": 2.31, "p_mean": 0.33,
                             "p_std": 1.2}
    config.model.output = "edm"
    config.objective.kwargs.weighting = "edm"
    config.samplers.euler_maruyama.num_steps = 500
    return config
