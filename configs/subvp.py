"""sub-VP SDE (Song et al. 2021, eq. 17) on the 2-D checkerboard: the VP drift with less
noise, so the variance of x_t stays below the VP's at every t.

    python -m experiments.main --config=configs/subvp.py --workdir=runs/subvp

Hardware: 2 CPU cores. Expected: RESULT_SUBVP
"""
from configs import default


def get_config():
    config = default.get_config()
    config.process.name = "subvp"
    return config
