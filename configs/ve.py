"""VE SDE (Song et al. 2021; the continuous SMLD/NCSN) on the 2-D checkerboard.

    python -m experiments.main --config=configs/ve.py --workdir=runs/ve

Hardware: 2 CPU cores. sigma_max = 12 is about the largest distance between two data points
(Song & Ermon 2020, technique 1). Expected: RESULT_VE
"""
from configs import default


def get_config():
    config = default.get_config()
    config.process.name = "ve"
    config.process.kwargs = {"sigma_min": 0.01, "sigma_max": 12.0}
    config.samplers.euler_maruyama.num_steps = 500
    return config
