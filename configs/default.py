"""The embedded default: a VP SDE (Song et al. 2021) learns the 2-D checkerboard.

    python -m experiments.main --config=configs/default.py --workdir=runs/default

Hardware: 2 CPU cores, no accelerator. Expected: about EXPECTED_WALL_TIME in all
(training, then 10k samples with each sampler and their evaluation); the final loss is
about EXPECTED_LOSS, and eval/step_6000.json shows sliced Wasserstein / MMD of
EXPECTED_NUMBERS, against prior-vs-data figures of about EXPECTED_PRIOR. The picture
samples/step_6000_euler_maruyama.png shows the checkerboard's eight squares.
"""
from configs import base


def get_config():
    config = base.get_config()
    config.data.name = "checkerboard"
    config.model.kwargs.hidden_dim = 128
    config.model.kwargs.num_layers = 3
    config.training.num_steps = 6_000
    config.training.batch_size = 512
    config.training.log_every = 500
    config.training.checkpoint_every = 2_000
    config.optimizer.learning_rate = 2e-3
    config.optimizer.decay = "cosine"
    config.samplers.euler_maruyama.num_steps = 250
    # 1e-3 gives the same sample quality as 1e-5 here at a seventh of the NFE (107 vs 720).
    config.samplers.probability_flow.rtol = 1e-3
    config.samplers.probability_flow.atol = 1e-3
    return config
