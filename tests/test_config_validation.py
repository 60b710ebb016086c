"""Every bad config value is rejected by build_experiment with one line naming the field,
before anything is compiled or written; every shipped config passes."""
import importlib
import os
import subprocess
import sys

import pytest

from genjax import factory
from genjax.experiment import build_experiment
from genjax.factory import ConfigError
from tests.subprocess_env import cpu_environment
from tests.tiny_config import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (field, bad value, what the one-line message must contain). A sampler named here is added
# to evaluate.samplers, so that the run uses it.
BAD_VALUES = [
    ("samplers.probability_flow.solver", "rk99",
     "samplers.probability_flow.solver='rk99': unknown solver 'rk99'; choose one of ('tsit5'"),
    ("samplers.probability_flow.rtol", -1e-3, "samplers.probability_flow.rtol=-0.001 must be >= 0"),
    ("samplers.probability_flow.atol", float("nan"), "samplers.probability_flow.atol=nan must be >= 0"),
    ("samplers.probability_flow.max_steps", 0, "samplers.probability_flow.max_steps=0 must be an integer >= 1"),
    ("samplers.euler_maruyama.num_steps", 0, "samplers.euler_maruyama.num_steps=0: num_steps must be >= 1"),
    ("samplers.predictor_corrector.predictor", "heun", "samplers.predictor_corrector.predictor='heun': unknown"),
    ("samplers.predictor_corrector.corrector", "ald", "samplers.predictor_corrector.corrector='ald': unknown"),
    ("samplers.predictor_corrector.step_size", "fixed", "samplers.predictor_corrector.step_size='fixed': unknown"),
    ("samplers.predictor_corrector.snr", 0.0, "samplers.predictor_corrector.snr=0.0 must be > 0"),
    ("samplers.predictor_corrector.corrector_steps", 0, "samplers.predictor_corrector.corrector_steps=0:"),
    ("samplers.ddim.num_steps", -5, "samplers.ddim.num_steps=-5:"),
    ("samplers.ddim.eta", 1.5, "samplers.ddim.eta=1.5 must lie in [0, 1]"),
    ("samplers.edm_heun.rho", -7.0, "samplers.edm_heun.rho=-7.0 must be > 0"),
    ("samplers.edm_heun.s_churn", -1.0, "samplers.edm_heun.s_churn=-1.0 must be >= 0"),
    ("process.kwargs.beta_max", -3.0, "process.kwargs.beta_max=-3.0 must be > 0, finite and >= beta_min=0.1"),
    ("process.kwargs.beta_min", -0.1, "process.kwargs.beta_min=-0.1 must be >= 0"),
    ("process.kwargs.beta_max", float("inf"), "process.kwargs.beta_max=inf must be > 0, finite"),
    ("process.kwargs.t_max", float("nan"), "process.kwargs.t_max=nan must be > 0 and finite"),
    ("process.kwargs.t_min_train", 0.0, "process.kwargs.t_min_train=0.0 must lie in (0, t_max=1.0)"),
    ("process.kwargs.t_min_sample", 1.5, "process.kwargs.t_min_sample=1.5 must lie in [0, t_max=1.0)"),
    ("objective.kwargs.weighting", "snr", "objective.kwargs.weighting='snr': unknown DSM weighting"),
    ("objective.kwargs.reduce", "max", "objective.kwargs.reduce='max': unknown reduction"),
    ("optimizer.learning_rate", 0.0, "optimizer.learning_rate=0.0 must be > 0"),
    ("optimizer.warmup_steps", -1, "optimizer.warmup_steps=-1 must be a non-negative integer"),
    ("optimizer.grad_clip_norm", -1.0, "optimizer.grad_clip_norm=-1.0 must be >= 0"),
    ("optimizer.b1", 1.0, "optimizer.b1=1.0 must be in [0, 1)"),
    ("optimizer.b2", -0.5, "optimizer.b2=-0.5 must be in [0, 1)"),
    ("optimizer.eps", 0.0, "optimizer.eps=0.0 must be > 0"),
    ("optimizer.weight_decay", -1e-4, "optimizer.weight_decay=-0.0001 must be >= 0"),
    ("training.ema_decay", 1.0, "training.ema_decay=1.0 must be in [0, 1)"),
    ("training.ema_rampup_ratio", -0.05, "training.ema_rampup_ratio=-0.05 must be finite and >= 0"),
    ("model.noise_input", "log_sigma", "model.noise_input='log_sigma'"),
    ("data.num_train_examples", 0, "data.num_train_examples=0 must be a positive integer"),
    ("evaluate.nll_num_points", -1, "evaluate.nll_num_points=-1 must be a non-negative integer"),
    ("evaluate.likelihood.solver", "heun", "evaluate.likelihood.solver='heun': unknown solver 'heun'"),
    ("evaluate.likelihood.divergence", "trace", "evaluate.likelihood.divergence='trace': unknown divergence"),
    ("evaluate.likelihood.probe", "uniform", "evaluate.likelihood.probe='uniform': unknown probe"),
    ("evaluate.likelihood.num_probes", 4, "evaluate.likelihood: num_probes is for divergence='hutchinson'"),
    ("evaluate.likelihood.rtol", -1.0, "evaluate.likelihood.rtol=-1.0 must be >= 0"),
    ("evaluate.likelihood.max_steps", 0, "evaluate.likelihood.max_steps=0 must be an integer >= 1"),
    ("model.kwargs.embedding", "learned", "model.kwargs.embedding='learned' is not known"),
    ("model.kwargs.embedding_dim", 15, "model.kwargs.embedding_dim=15 must be a positive even integer"),
    ("model.kwargs.hidden_dim", 0, "model.kwargs.hidden_dim=0 must be a positive integer"),
    ("model.kwargs.num_layers", -1, "model.kwargs.num_layers=-1 must be a non-negative integer"),
    ("model.kwargs.time_scale", 0.0, "model.kwargs.time_scale=0.0 must be positive and finite"),
    ("mesh.tensor", 2, "mesh.tensor=2 has no effect with sharding.params='replicated'"),
    ("sharding.fsdp_min_size", -1, "sharding.fsdp_min_size=-1 must be a non-negative integer"),
    ("seed", 2**64, "seed=18446744073709551616 must be an integer"),
    ("data.name", "mnist", "data.name='mnist' is not known; valid choices: checkerboard"),
    ("sampling.sampler", "dpm_solver", "sampling.sampler='dpm_solver' is not known; valid choices: ddim, edm_heun"),
    ("evaluate.samplers", "euler_maruyama,heun", "evaluate.samplers='heun' is not known"),
    ("training.batch_size", 66, "training.batch_size=66 does not divide over the 8 devices"),
]

EDM_BAD_VALUES = [
    ("sigma_min", 0.0, "process.kwargs.sigma_min=0.0 must be > 0"),
    ("sigma_max", 0.001, "process.kwargs.sigma_max=0.001 must be finite and > sigma_min=0.002"),
    ("sigma_data", -0.5, "process.kwargs.sigma_data=-0.5 must be > 0"),
    ("p_std", 0.0, "process.kwargs.p_std=0.0 must be > 0"),
    ("rho", 0.0, "process.kwargs.rho=0.0 must be > 0"),
]


def with_value(config, path, value):
    *sections, field = path.split(".")
    node = config
    for name in sections:
        node = node[name]
    node[field] = value
    if path.startswith("samplers."):
        sampler = sections[1]
        if sampler not in config.evaluate.samplers.split(","):
            config.evaluate.samplers += f",{sampler}"
    return config


def rejection(config) -> str:
    with pytest.raises(ConfigError) as raised:
        build_experiment(config)
    message = str(raised.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("path, value, expected", BAD_VALUES, ids=[f"{p}={v}" for p, v, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_the_field(path, value, expected):
    message = rejection(with_value(tiny_config(), path, value))
    assert message.startswith(expected), message


@pytest.mark.parametrize("field, value, expected", EDM_BAD_VALUES, ids=[f"{f}={v}" for f, v, _ in EDM_BAD_VALUES])
def test_bad_edm_process_value_is_one_line_naming_the_field(field, value, expected):
    config = tiny_config()
    config.process.name = "edm"
    config.process.kwargs = {field: value}
    assert rejection(config).startswith(expected)


def test_ve_sigma_range_is_checked():
    config = tiny_config()
    config.process.name = "ve"
    config.process.kwargs = {"sigma_min": 5.0, "sigma_max": 1.0}
    assert rejection(config).startswith("process.kwargs.sigma_max=1.0 must be finite and > sigma_min=5.0")


def test_sampler_options_are_checked_where_the_run_uses_the_sampler_only():
    """A sampler the run never calls may carry options meant for another process."""
    config = tiny_config()
    config.samplers.ddim.eta = 2.0
    build_experiment(config)
    config.sampling.sampler = "ddim"
    assert rejection(config).startswith("samplers.ddim.eta=2.0")


def test_likelihood_options_are_checked_when_the_nll_is_computed():
    config = tiny_config()
    config.evaluate.likelihood.solver = "euler"
    assert rejection(config).startswith("evaluate.likelihood.solver='euler'")
    config.evaluate.nll_num_points = 0
    build_experiment(config)


def _is_config(name: str) -> bool:
    """configs/<name> is a config (it has get_config), not base.py or a shared recipe module. The
    CIFAR-10 configs are built (and their networks counted) in tests/test_cifar10_configs.py."""
    path = os.path.join(ROOT, "configs", name)
    return (name.endswith(".py") and name != "base.py" and not name.startswith("cifar10_")
            and "\ndef get_config(" in open(path).read())


SHIPPED_CONFIGS = sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "configs")) if _is_config(name))


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_every_shipped_config_passes(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    if factory.build_process(config).has_reverse_sde:  # the stochastic samplers' defaults must pass too
        for sampler in ("predictor_corrector", "ddim", "edm_heun"):
            config.evaluate.samplers += f",{sampler}"
    build_experiment(config)


# Through the real command line (the two values): one line on stderr, exit status 2,
# nothing written.
CLI_BAD_VALUES = [
    ("--config.samplers.probability_flow.solver=rk99",
     "error: samplers.probability_flow.solver='rk99': unknown solver"),
    ("--config.process.kwargs.beta_max=-3", "error: process.kwargs.beta_max=-3.0 must be > 0"),
]


@pytest.mark.parametrize("override, expected", CLI_BAD_VALUES, ids=[o for o, _ in CLI_BAD_VALUES])
def test_bad_value_on_the_command_line_exits_2_before_writing(tmp_path, override, expected):
    workdir = tmp_path / "run"
    env = cpu_environment(1)
    command = [sys.executable, "-m", "experiments.main", "--config=configs/default.py", f"--workdir={workdir}",
               override]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr[-2000:]
    assert not workdir.exists()
