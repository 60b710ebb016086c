"""Flow matching on the 2-D checkerboard: one conditional path whose path, coupling and
smoothing are config values (genjax/processes/flow_matching.py), regressed by conditional
flow matching (genjax/objectives/flow_matching.py) with a velocity-output MLP.

    python -m experiments.main --config=configs/flow_matching.py --workdir=runs/fm_icfm
    # OT-CFM, near-exact minibatch OT on the device (Sinkhorn, 5 epsilon levels x 10 iterations):
    python -m experiments.main --config=configs/flow_matching.py --workdir=runs/fm_otcfm \\
        --config.process.kwargs.coupling=sinkhorn_ot
    # OT-CFM with the exact assignment (auction; certified, but about 1 s per step on a CPU):
    ... --config.process.kwargs.coupling=exact_ot
    # SB-CFM (entropic plan, epsilon = 2 sigma^2, Brownian-bridge noise sigma):
    python -m experiments.main --config=configs/flow_matching.py --workdir=runs/fm_sbcfm \\
        --config.process.kwargs.coupling=schrodinger_bridge --config.process.kwargs.sigma=0.5
    # the variance-preserving (cosine) path; Lipman's sigma_min on the linear path:
    ... --config.process.kwargs.path=vp       ... --config.process.kwargs.sigma_min=1e-3
    # reflow (Liu et al. 2023) of a trained run: its ODE pairs, a student trained on them
    python -m experiments.reflow --teacher_workdir=runs/fm_icfm --workdir=runs/fm_reflow

Values: path = linear | vp; coupling = independent | sinkhorn_ot (ot_epsilon, ot_epsilon_levels, ot_iterations) |
exact_ot (ot_tolerance) | schrodinger_bridge | given_pairs (reflow's student); sigma >= 0
(> 0 for the bridge); sigma_min in [0, 1) (linear path). Only the independent coupling keeps
a score, so only it may use the stochastic samplers (with t_max < 1); every coupling samples
with the probability-flow ODE and gets the exact-trace NLL.

Hardware: 2 CPU cores shared with other jobs (load average 11-17, so wall times are several
times those of an idle machine; compare rates only within one line). Measured with
--config.evaluate.num_samples=4000 --config.evaluate.nll_num_points=500 (noise floor of two
fresh 4000-point data sets: SWD 0.063; the prior: SWD 1.33, NLL 3.58 nats/dim; the
checkerboard's true NLL is log(32)/2 = 1.733), probability-flow ODE (tsit5, rtol = atol = 1e-3),
NLL by the exact trace (tsit5, 1e-5):

    coupling                      steps  steps/s*  SWD    MMD      NFE   NLL (nats/dim)   NLL NFE
    independent (I-CFM)           6000   37.7      0.149  0.0020   85    1.808 +- 0.008   832
    schrodinger_bridge, sigma=0.5 6000   27.3      0.159  0.0024   65    1.805 +- 0.008   738
    exact_ot (OT-CFM)             1000   2.4       0.598  0.1018   66    2.185 +- 0.023   549
    (* the last logged interval, runs sharing the cores; OT-CFM run with
     --config.training.num_steps=1000 --config.training.checkpoint_every=500: at 1000 steps
     the EMA (decay 0.999) still holds a third of the early weights, so its row measures the
     cost of the coupling, not the quality OT-CFM reaches at 6000 steps; its CFM loss ends at
     0.086 against I-CFM's 3.36, the straighter conditional paths)

The same config at 3000 steps (--config.training.num_steps=3000
--config.training.checkpoint_every=1000, the default evaluation: 10000 samples, NLL of 2000
held-out points; noise floor SWD 0.064), measured 2026-11-25 on the same loaded cores:

    coupling                      train   SWD    MMD      NFE   NLL (nats/dim)   NLL NFE
    independent (I-CFM)           ~2 min  0.131  0.0046   91    1.897 +- 0.006   833
    independent, path=vp          ~1.5 min 0.106 0.0023   94    1.855 +- 0.005   832
    sinkhorn_ot (OT-CFM)          ~1 min  0.120  0.0028   59    1.835 +- 0.005   636   (5 x 10 levels)
    reflow of the I-CFM run       42 s*   0.174  -        48    -                -
    (* 3000 student steps on 20000 ODE pairs of the I-CFM run, drawn in 512 s at 622 NFE
     each (tsit5, 1e-5); `python -m experiments.reflow --teacher_workdir=... --workdir=...
     --steps=3000`. Straightness 1.76 -> 0.0001; Euler SWD with 1 / 2 / 4 steps
     2.03 / 1.16 / 0.59 (teacher) -> 0.179 / 0.175 / 0.176 (student).)

OT-CFM's coupling cost: the auction (exact_ot) takes about 1 s per 256 x 256 minibatch here,
the Sinkhorn of sinkhorn_ot (5 epsilon levels x 10 iterations) about 2 ms with a plan cost
about 1 % above the exact assignment's (`python -m experiments.benchmark_flow_matching`, which also times torchcfm).
For the same network, configs/default.py (VP SDE, 6000 steps) gives probability-flow SWD
0.097 and NLL 1.785.
"""
import ml_collections

from configs import base


def get_config():
    config = base.get_config()
    config.data.name = "checkerboard"
    config.process.name = "flow_matching"
    config.process.kwargs = ml_collections.ConfigDict(
        {"path": "linear", "coupling": "independent", "sigma": 0.0, "sigma_min": 0.0,
         "ot_epsilon": 0.01, "ot_epsilon_levels": 5, "ot_iterations": 10}  # sinkhorn_ot's plan
    )
    config.model.output = "velocity"
    config.model.kwargs.hidden_dim = 128
    config.model.kwargs.num_layers = 3
    config.objective.name = "cfm"
    config.objective.kwargs = ml_collections.ConfigDict({"reduce": "mean"})
    config.training.num_steps = 6_000
    config.training.batch_size = 256
    config.training.log_every = 500
    config.training.checkpoint_every = 2_000
    config.optimizer.learning_rate = 2e-3
    config.optimizer.decay = "cosine"
    config.sampling.sampler = "probability_flow"
    config.samplers.probability_flow.rtol = 1e-3
    config.samplers.probability_flow.atol = 1e-3
    config.evaluate.samplers = "probability_flow"
    return config
