"""PFGM (Xu et al. 2022) on the 2-D checkerboard: data are charges on the z = 0 plane of R^3,
the network (configs/edm.py's MLP, three outputs, EDM's input scaling) regresses the
normalised Poisson field of each batch of 512 charges at points pushed into the upper
half-space (tau = 0.03, M = 291, sigma = 0.01, gamma = 5: the paper's values), and samples flow
back along the field from the prior on the plane z = z_max = 40 to z_min = 1e-3.

    python -m experiments.main --config=configs/pfgm.py --workdir=runs/pfgm

PFGM has no reverse-time SDE: sampling uses the probability-flow ODE (dx/dz = E_x / E_z,
adaptive Tsit5) and EDM's Heun sampler without churn.

Hardware: 2 CPU cores, measured while other jobs loaded them (load average 12-15): training
(6000 steps) took 9 min wall, 11-27 steps/s; the loss ends near 1.1e-4. On 2000 samples
against fresh data (noise floor SWD 0.110, MMD 0.0003): EDM Heun (63 NFE) MMD -0.0005, probability
flow (278 NFE) MMD -0.0008, i.e. the bulk is at the noise floor, but 1.2 % of the samples are
prior draws far in the Cauchy tail (|x| > 10, up to about 1e4) that the network, which never
saw such points, leaves where they are, so SWD is 1190. The NLL through the ODE (exact
divergence, tol 1e-5) fails on 9 of 100 held-out points (trajectories leave the data where the
learned T_z has the wrong sign), so it is NaN, with 3788 NFE per point. These numbers are from
the step-6000 checkpoint with 2000 samples and 100 NLL points: the command's own evaluation
(10000 samples per sampler, NLL on 500 points) had not finished after 30 min on the loaded
machine, the failing solves running to max_steps.
PFGM++ with D = 1 trained by the denoiser objective instead (configs/pfgmpp.py with
--config.process.kwargs.augment_dim=1, same network, 6000 steps, 12.5 min there), same
protocol: EDM Heun MMD 0.231, probability flow (382 NFE) MMD 0.239, 0.15 % stray, NLL
2.359 +- 0.048 nats/dim (2013 NFE, no failures; the true value is log(32)/2 = 1.733).
"""
from configs import default


def get_config():
    config = default.get_config()
    config.process.name = "pfgm"
    # M = 450, not the paper's 291: in 2-D that covers radii up to 94 only, and 39 % of the Cauchy
    # prior at z_max = 40 lies beyond. M = 450 covers radii up to 1.0e4, but directions near the
    # plane are rare in training (their share falls as the angle), so the learned field brings
    # prior draws back from radius 2000 and not from 4000: the prior is clipped at 1500 (2.7 % of
    # its draws). z_exp = z_max: the blend of the field's two readings serves at every height.
    config.process.kwargs = {"z_min": 1e-3, "z_max": 40.0, "perturb_std": 0.01, "tau": 0.03, "max_exponent": 450.0,
                             "gamma": 5.0, "z_exp": 40.0, "upper_norm": 1500.0, "sigma_data": 2.31}
    config.model.output = "poisson_field"
    config.model.kwargs.output_dim = 3  # the field in R^(N+1), N = 2
    config.objective.name = "poisson_field"
    config.objective.kwargs = {"reduce": "mean"}
    config.sampling.sampler = "probability_flow"
    config.samplers.edm_heun.num_steps = 32
    config.evaluate.samplers = "edm_heun,probability_flow"
    config.evaluate.nll_num_points = 500  # each exact-divergence solve costs thousands of NFE here
    return config
