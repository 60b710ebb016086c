"""A tiny experiment config for tests: seconds to train, sample and evaluate on CPU."""
from configs import base


def tiny_config(**training):
    config = base.get_config()
    config.data.name = "eight_gaussians"
    config.data.num_train_examples = 4096
    config.model.kwargs.hidden_dim = 32
    config.model.kwargs.num_layers = 2
    config.model.kwargs.embedding_dim = 16
    config.training.num_steps = 20
    config.training.batch_size = 64
    config.training.log_every = 5
    config.training.sync_every = 5
    config.training.checkpoint_every = 10
    config.optimizer.warmup_steps = 5
    config.sampling.num_samples = 256
    config.evaluate.num_samples = 256
    config.evaluate.nll_num_points = 64
    config.samplers.euler_maruyama.num_steps = 20
    config.samplers.probability_flow.rtol = 1e-3
    config.samplers.probability_flow.atol = 1e-3
    for name, value in training.items():
        config.training[name] = value
    return config


def _flatten(config, prefix=""):
    for name, value in config.items():
        if hasattr(value, "items"):
            yield from _flatten(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def tiny_overrides(**training) -> list[str]:
    """The command-line overrides that turn configs/base.py into tiny_config(**training)."""
    defaults = dict(_flatten(base.get_config()))
    return [f"--config.{name}={value}" for name, value in _flatten(tiny_config(**training)) if defaults[name] != value]
