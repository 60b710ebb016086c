"""VE SDE (Song et al. 2021; the continuous SMLD/NCSN) on the 2-D checkerboard.

    python -m experiments.main --config=configs/ve.py --workdir=runs/ve

Hardware: 2 CPU cores. sigma_max = 12 is about the largest distance between two data points
(Song & Ermon 2020, technique 1). Expected: about 1.5 min. Euler-Maruyama (501 NFE) SWD 0.037, MMD 0.00006
(noise floor 0.064 / 0.00006; prior 1.32 / 0.59); probability flow (about 92 NFE) SWD 0.091,
MMD 0.0007; NLL 1.763 +- 0.003 nats/dim (true 1.733; the VE prior gives 3.423).
"""
from configs import default


def get_config():
    config = default.get_config()
    config.process.name = "ve"
    config.process.kwargs = {"sigma_min": 0.01, "sigma_max": 12.0}
    config.samplers.euler_maruyama.num_steps = 500
    return config
