"""PFGM (Xu et al. 2022) on the 2-D checkerboard: data are charges on the z = 0 plane of R^3,
the network (configs/edm.py's MLP, three outputs) regresses the normalised Poisson field of
each batch of 512 charges at points pushed into the upper half-space (tau = 0.03, M = 291,
sigma = 0.01, gamma = 5: the paper's values), and samples flow back along the field from the
prior on the plane z = z_max = 40 to z_min = 1e-3.

    python -m experiments.main --config=configs/pfgm.py --workdir=runs/pfgm

PFGM has no reverse-time SDE: sampling uses the probability-flow ODE (dx/dz = E_x / E_z,
adaptive Tsit5) and EDM's Heun sampler without churn.
"""
from configs import default


def get_config():
    config = default.get_config()
    config.process.name = "pfgm"
    config.process.kwargs = {"z_min": 1e-3, "z_max": 40.0, "perturb_std": 0.01, "tau": 0.03, "max_exponent": 291.0,
                             "gamma": 5.0, "z_exp": 5.0, "sigma_data": 2.31}
    config.model.output = "poisson_field"
    config.model.kwargs.output_dim = 3  # the field in R^(N+1), N = 2
    config.objective.name = "poisson_field"
    config.objective.kwargs = {"reduce": "mean"}
    config.sampling.sampler = "probability_flow"
    config.samplers.edm_heun.num_steps = 32
    config.evaluate.samplers = "edm_heun,probability_flow"
    config.evaluate.nll_num_points = 500  # each exact-divergence solve costs thousands of NFE here
    return config
