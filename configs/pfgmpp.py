"""PFGM++ (Xu et al. 2023) on the 2-D checkerboard: EDM's schedule, preconditioning and loss
(configs/edm.py) with the Student-t(D) perturbation kernel and prior, D = 128 extra
dimensions (override with --config.process.kwargs.augment_dim=8). PFGM++ has no reverse-time
SDE, so sampling uses the probability-flow ODE and EDM's Heun sampler without churn.

    python -m experiments.main --config=configs/pfgmpp.py --workdir=runs/pfgmpp

Hardware: 2 CPU cores. Expected (6000 steps, as configs/edm.py; 4.2 CPU-minutes of user time,
measured while other jobs shared the cores, so the wall time was 7.5-11 min there; loss ends
near 0.91 for D = 128, 1.06 for D = 8), against the noise floor of two fresh data sets
(SWD 0.064, MMD 0.00006):

    D     EDM Heun (63 NFE)   probability flow       NLL (nats/dim)   prior: SWD, NLL
    128   SWD 0.038, MMD 5e-5  0.042, 1.5e-4 (137 NFE)  1.781 +- 0.003   17.7, 3.92
    8     SWD 0.039, MMD 4e-5  0.039, 0.8e-4 (145 NFE)  1.781 +- 0.003   20.7, 3.92

The checkerboard's true NLL is log(32)/2 = 1.733; EDM (configs/edm.py) gives 1.778 with
the same network and steps.
"""
from configs import edm


def get_config():
    config = edm.get_config()
    config.process.name = "pfgmpp"
    config.process.kwargs.augment_dim = 128.0
    config.sampling.sampler = "edm_heun"
    config.samplers.edm_heun.num_steps = 32
    config.evaluate.samplers = "edm_heun,probability_flow"
    return config
