"""sub-VP SDE (Song et al. 2021, eq. 17) on the 2-D checkerboard: the VP drift with less
noise, so the variance of x_t stays below the VP's at every t.

    python -m experiments.main --config=configs/subvp.py --workdir=runs/subvp

Hardware: 2 CPU cores. Expected: about 1.5 min. Euler-Maruyama (251 NFE) SWD 0.054, MMD 0.0002
(noise floor 0.064 / 0.00006; prior 1.32 / 0.59); probability flow (about 104 NFE) SWD 0.097,
MMD 0.0010; NLL 1.780 +- 0.003 nats/dim (true 1.733).
"""
from configs import default


def get_config():
    config = default.get_config()
    config.process.name = "subvp"
    return config
