"""PFGM (Xu et al. 2022) on the 2-D checkerboard: data are charges on the z = 0 plane of R^3,
the network (configs/edm.py's MLP, three outputs, EDM's input scaling) regresses the
normalised Poisson field of each batch of 512 charges at points pushed into the upper
half-space (tau = 0.03, sigma = 0.01, gamma = 5: the paper's values; M = 450), and samples flow
back along the field from the prior on the plane z = z_max = 40 to z_min = 1e-3.

    python -m experiments.main --config=configs/pfgm.py --workdir=runs/pfgm

PFGM has no reverse-time SDE: sampling uses the probability-flow ODE (dx/dz = E_x / E_z,
adaptive Tsit5) and EDM's Heun sampler without churn.

What makes it work in 2-D (against the paper's CIFAR-10 settings): the
prior on z = z_max is a Cauchy whose tail the paper's M = 291 does not cover (radii to 94; 39 %
of the prior lies beyond), so M = 450 (radii to 1.0e4) and the prior clipped at 1500 as the
paper's sampler clips it (2.7 % of draws); the field's ratio reading -T_x / |T_z| blended with
the inversion at every height (z_exp = z_max), so a learned T_z near 0 far out near the plane
cannot reverse the likelihood's flow; likelihood solves get up to 16384 steps.

Hardware: 2 CPU cores shared with other jobs (load average 11-18). Training (6000 steps) took
4.8 min wall at 17-29 steps/s; the loss ends near 1.1e-4. The command's evaluation (10000
samples; noise floor SWD 0.0635, MMD 0.00006): EDM Heun (63 NFE) SWD 0.068, MMD 0.0022;
probability flow (306 NFE) SWD 0.064, MMD 0.0018; no sample farther than 10 from the origin
(before the fix: 1.2 %, SWD 1190). NLL of 500 held-out points 2.104 +- 0.071 nats/dim (exact
divergence, tol 1e-5, mean NFE 1980, no failed solve; the true value is log(32)/2 = 1.733, EDM
with the same network and steps 1.778, the prior alone 4.613): edge points' flows leave the
plane at grazing angles, where the learned field is least accurate. With 4096 steps per solve,
3 of the 500 solves of one evaluation of the same checkpoint ran out of steps (another ran all
500 within them): the evaluation then reports NaN and the count. The whole command took 21.6
min wall (7.1 CPU-minutes), most of it the 500 exact-divergence solves.
PFGM++ with D = 1 trained by the denoiser objective instead (configs/pfgmpp.py with
--config.process.kwargs.augment_dim=1, same network, 6000 steps): EDM Heun MMD 0.231,
probability flow (382 NFE) MMD 0.239, 0.15 % stray, NLL 2.359 +- 0.048 nats/dim (2013 NFE,
2000 samples and 100 NLL points; measured before this config's changes, which do not touch it).
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
    config.evaluate.likelihood.max_steps = 16384  # a few flows from the data's edges need more than 4096
    return config
