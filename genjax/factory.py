"""The one place that maps a config's names to constructors.

Every name a config may use (dataset, process, network, objective, sampler) is a key of
one of the tables below; `ConfigError` lists the valid choices when a name is unknown or a
constructor is given an argument it does not take. Nothing else in the code base branches
on these names.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from typing import Any, Callable, Mapping

from genjax.data import toy
from genjax.data.checkerboard_oracle import perturbed_checkerboard_log_prob_fn, perturbed_checkerboard_score_fn
from genjax.data.gaussian_mixture import perturbed_log_prob_fn, perturbed_score_fn
from genjax.data.images import datasets as image_datasets
from genjax.nets.concatsquash import ConcatSquashMLP
from genjax.nets.mlp import TimeConditionedMLP
from genjax.nets.unet import DDPMpp, NCSNpp, SongUNet
from genjax.objectives.maximum_likelihood import cnf_maximum_likelihood_loss
from genjax.objectives.flow_matching import conditional_flow_matching_loss
from genjax.objectives.poisson_field import poisson_field_loss
from genjax.objectives.score_matching import denoising_score_matching_loss
from genjax.nets.preconditioning import c_in, c_noise, edm_denoiser, expand_to, per_example_coefficient
from genjax.processes.cnf import ContinuousNormalizingFlow
from genjax.processes.edm import EDMProcess
from genjax.processes.flow_matching import FlowMatchingPath
from genjax.processes.pfgm import PFGMProcess
from genjax.processes.pfgmpp import PFGMPPProcess
from genjax.processes.subvp import SubVPSDE
from genjax.processes.ve import VESDE
from genjax.processes.views import Model, sigma_tilde_from_coefficients
from genjax.processes.vp import VPSDE
from genjax.samplers.ddim import sample_ddim
from genjax.samplers.edm_heun import sample_edm_heun
from genjax.samplers.predictor_corrector import sample_predictor_corrector
from genjax.samplers.probability_flow import sample_probability_flow
from genjax.samplers.reverse_sde import sample_reverse_sde
from genjax.train import parallel


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and the valid choices."""


def option_error(section: str, options: Mapping[str, Any], error: Exception) -> ConfigError:
    """A ConfigError, on one line, for the error a constructor or a sampler raised on
    the options of config section `section`. The field is named when the message points
    to exactly one option (its name and value, or its string value, appear in it):
    "<section>.<name>=<value>: <message>"; otherwise "<section>: <message>"."""
    message = " ".join(str(error).split())
    if not isinstance(error, ValueError):
        message = f"{type(error).__name__}: {message}"
    for name in options:
        if message.startswith(f"{name}="):
            return ConfigError(f"{section}.{message}")
    named = [name for name, value in options.items()
             if re.search(rf"\b{re.escape(name)}\b", message) and repr(value) in message]
    if len(named) != 1:
        named = [name for name, value in options.items() if isinstance(value, str) and repr(value) in message]
    if len(named) == 1:
        return ConfigError(f"{section}.{named[0]}={options[named[0]]!r}: {message}")
    return ConfigError(f"{section}: {message}")


# Each dataset: (key, num) -> [num, 2] float32, deterministic in the key; or an
# image_datasets.ImageDataset, which builds a batch stream from config.data's fields.
DATASETS: Mapping[str, Callable] = {
    "checkerboard": toy.checkerboard,
    "eight_gaussians": toy.eight_gaussians,
    "two_moons": toy.two_moons,
    "swiss_roll": toy.swiss_roll,
    "concentric_rings": toy.concentric_rings,
    "pinwheel": toy.pinwheel,
    "two_spirals": toy.two_spirals,
    "gaussian_mixture": toy.gaussian_mixture,
    "digits": image_datasets.DIGITS,
    "tfds": image_datasets.TFDS,
    "image_folder": image_datasets.IMAGE_FOLDER,
}

# Datasets whose diffused density is known in closed form: name -> (process -> exact score
# fn, process -> exact log p_t fn), both per example (x, t). Used to compare trained models
# with the exact score on the same sampler (experiments/toy_vs_oracle.py).
ORACLES: Mapping[str, tuple[Callable, Callable]] = {
    "checkerboard": (perturbed_checkerboard_score_fn, perturbed_checkerboard_log_prob_fn),
    "gaussian_mixture": (
        lambda process: perturbed_score_fn(toy.gaussian_mixture_oracle(), process),
        lambda process: perturbed_log_prob_fn(toy.gaussian_mixture_oracle(), process),
    ),
}

PROCESSES: Mapping[str, type] = {
    "vp": VPSDE,
    "ve": VESDE,
    "subvp": SubVPSDE,
    "edm": EDMProcess,
    "pfgmpp": PFGMPPProcess,
    "flow_matching": FlowMatchingPath,
    "cnf": ContinuousNormalizingFlow,
    "pfgm": PFGMProcess,
}


def _edm_preconditioned(process, network_fn):
    """Karras et al. 2022 preconditioning around the raw network, read as a denoiser. The
    data standard deviation is the process's `sigma_data` (0.5 if it has none), the same
    value the EDM loss weighting uses."""
    sigma_data = getattr(process, "sigma_data", 0.5)

    def sigma_of_t(t):
        return sigma_tilde_from_coefficients(*process.marginal_coefficients(t))

    def scale_of_t(t):
        return process.marginal_coefficients(t)[0]

    return Model(edm_denoiser(network_fn, sigma_of_t, sigma_data, scale_of_t=scale_of_t), "denoised")


def _poisson_field_preconditioned(process, network_fn):
    """PFGM's field model (Xu et al. 2022): the raw network's output is the normalised (N+1)-vector
    field; its input is scaled as EDM's, F(c_in(sigma) x, c_noise(sigma)) with sigma = z (Karras et
    al. 2022, Table 1), so the same network serves EDM, PFGM++ and PFGM."""
    sigma_data = getattr(process, "sigma_data", 0.5)

    def sigma_of_t(t):
        return sigma_tilde_from_coefficients(*process.marginal_coefficients(t))

    def field_fn(x, t, *args, **kwargs):
        sigma = per_example_coefficient(sigma_of_t, t)
        return network_fn(c_in(expand_to(sigma, x), sigma_data) * x, c_noise(sigma), *args, **kwargs)

    return Model(field_fn, "poisson_field")


# What the network's output means: (process, batched network fn) -> `views.Model`, whose
# views (score, denoised, velocity) the samplers, the likelihood and the objectives ask for.
# An output read by a formula of `views.OUTPUT_KINDS` is one entry here.
PARAMETRIZATIONS: Mapping[str, Callable] = {
    "noise": lambda process, fn: Model(fn, "noise"),
    "score": lambda process, fn: Model(fn, "score"),
    "denoised": lambda process, fn: Model(fn, "denoised"),
    "velocity": lambda process, fn: Model(fn, "velocity"),
    "edm": _edm_preconditioned,
    "poisson_field": _poisson_field_preconditioned,
}

def _marginal_std(process, t):
    """sigma(t) of the process's kernel N(alpha(t) x_0, sigma(t)^2 I), per example."""
    return per_example_coefficient(lambda s: process.marginal_coefficients(s)[1], t)


# The noise level the network is fed for its time input t: score_sde's continuous VP/sub-VP
# networks take t (DDPM++ scales it by 999), its VE networks take sigma(t) (NCSN++ embeds
# log sigma and divides its output by sigma). The "edm" and "poisson_field" outputs feed
# c_noise(sigma) through their own preconditioning and take "time" only.
NOISE_INPUTS: Mapping[str, Callable] = {
    "time": lambda process, t: t,
    "sigma": _marginal_std,
}
PRECONDITIONED_OUTPUTS = ("edm", "poisson_field")

NETWORKS: Mapping[str, type] = {
    "mlp": TimeConditionedMLP,
    "concatsquash": ConcatSquashMLP,
    "ddpmpp": DDPMpp,
    "ncsnpp": NCSNpp,
    "song_unet": SongUNet,
}

# Each objective: (model, process, batch, example_keys, **kwargs) -> scalar loss; `batch` is the
# data stream's dict {"x": [B, *shape], "label": [B] if labelled}, and `model` is
# a `views.Model`, of which the objective asks the view it regresses (score or velocity).
OBJECTIVES: Mapping[str, Callable] = {
    "dsm": denoising_score_matching_loss,
    "cfm": conditional_flow_matching_loss,
    "cnf_mle": cnf_maximum_likelihood_loss,
    "poisson_field": poisson_field_loss,
}

# Each sampler: (process, model, key, num_samples, shape, condition=None, **kwargs) -> SampleResult
# (condition: None or the [num_samples] class labels of the samples).
SAMPLERS: Mapping[str, Callable] = {
    "euler_maruyama": sample_reverse_sde,
    "probability_flow": sample_probability_flow,
    "predictor_corrector": sample_predictor_corrector,
    "ddim": sample_ddim,
    "edm_heun": sample_edm_heun,
}

# Each rule: (mesh, min_size) -> ((path, abstract leaf) -> PartitionSpec).
SHARDING_RULES: Mapping[str, Callable] = {
    "replicated": parallel.replicate_all,
    "fsdp": parallel.fsdp_largest_dim,
    "fsdp_tensor": parallel.fsdp_tensor,
}


def lookup(table: Mapping[str, Any], name: str, field: str) -> Any:
    if name not in table:
        raise ConfigError(f"{field}={name!r} is not known; valid choices: {', '.join(sorted(table))}")
    return table[name]


def _keyword_parameters(fn: Callable) -> set[str]:
    """Names `fn` accepts as keywords (a dataclass's init fields; flax's parent/name excluded)."""
    if dataclasses.is_dataclass(fn):
        return {f.name for f in dataclasses.fields(fn) if f.init} - {"parent", "name"}
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_kwargs(fn: Callable, kwargs: Mapping[str, Any], field: str, allowed_hidden: tuple = ()) -> dict:
    """The kwargs as a dict, or ConfigError naming the first one `fn` does not accept."""
    kwargs = dict(kwargs)
    valid = _keyword_parameters(fn) - set(allowed_hidden)
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ConfigError(f"{field} has unknown argument(s) {unknown}; valid: {', '.join(sorted(valid))}")
    return kwargs


def build_dataset(config) -> Callable:
    return lookup(DATASETS, config.data.name, "data.name")


def build_oracle(config, process) -> tuple[Callable, Callable]:
    """(exact score fn, exact log p_t fn) of config.data.name diffused by `process`."""
    if config.data.name not in ORACLES:
        raise ConfigError(
            f"data.name={config.data.name!r} has no exact oracle; datasets with one: {', '.join(sorted(ORACLES))}"
        )
    score_fn, log_prob_fn = ORACLES[config.data.name]
    return score_fn(process), log_prob_fn(process)


def build_process(config):
    """The process; ConfigError if a parameter is out of its range (checked by the
    process's constructor)."""
    cls = lookup(PROCESSES, config.process.name, "process.name")
    kwargs = check_kwargs(cls, config.process.kwargs, "process.kwargs")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise option_error("process.kwargs", kwargs, error) from None


def build_network(config):
    """The network; ConfigError if a hyperparameter is out of its range (checked by the
    network's constructor). A class-conditional run (config.model.num_classes > 0) passes
    num_classes to the constructor."""
    cls = lookup(NETWORKS, config.model.name, "model.name")
    kwargs = check_kwargs(cls, config.model.kwargs, "model.kwargs")
    if "num_classes" in kwargs:
        raise ConfigError(f"model.kwargs.num_classes={kwargs['num_classes']!r}: the number of classes is the field "
                          f"model.num_classes; set model.num_classes={kwargs['num_classes']!r} and remove it from "
                          "model.kwargs")
    if config.model.num_classes:
        if "num_classes" not in _keyword_parameters(cls):
            raise ConfigError(f"model.num_classes={config.model.num_classes}: network {config.model.name!r} takes no "
                              "class labels; set model.num_classes=0 or use a network that does")
        kwargs["num_classes"] = config.model.num_classes
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise option_error("model.kwargs", kwargs, error) from None


def build_model(config, process, network_fn, shared_noise_level: bool = False):
    """The `views.Model` of a batched network function (x [B, *shape], t [B], condition=None, *,
    dropout_key=None, train=False) -> [B, ...], as config.model.output says.
    `shared_noise_level`: the network also takes one noise level [1] for the whole batch; the
    model says so (`views.Model.shared_noise_level`) where the output passes t through
    unchanged (not the preconditioned outputs, whose coefficients are per example)."""
    model = _parametrized_model(config, process, network_fn)
    if shared_noise_level and config.model.output not in PRECONDITIONED_OUTPUTS:
        model = dataclasses.replace(model, shared_noise_level=True)
    return model


def _parametrized_model(config, process, network_fn):
    parametrization = lookup(PARAMETRIZATIONS, config.model.output, "model.output")
    noise_input = lookup(NOISE_INPUTS, config.model.noise_input, "model.noise_input")
    if config.model.noise_input != "time":
        if config.model.output in PRECONDITIONED_OUTPUTS:
            raise ConfigError(f"model.noise_input={config.model.noise_input!r} does not apply to model.output="
                              f"{config.model.output!r}, whose preconditioning feeds the network c_noise(sigma); "
                              f"set model.noise_input='time'")
        if not hasattr(process, "marginal_coefficients"):
            raise ConfigError(f"model.noise_input={config.model.noise_input!r} needs a process with a Gaussian "
                              f"kernel sigma(t); process.name={config.process.name!r} has none: use 'time'")

        def fed(x, t, *args, **kwargs):
            return network_fn(x, noise_input(process, t), *args, **kwargs)

        return parametrization(process, fed)
    return parametrization(process, network_fn)


def build_objective(config) -> Callable:
    """(model, process, batch, example_keys) -> loss, with the config's options bound."""
    fn = lookup(OBJECTIVES, config.objective.name, "objective.name")
    kwargs = check_kwargs(fn, config.objective.kwargs, "objective.kwargs")
    return functools.partial(fn, **kwargs)


# Rules that place parameters along the `tensor` mesh axis; with any other rule a tensor
# axis above 1 would only repeat the same work on every one of its devices.
TENSOR_PARALLEL_RULES = ("fsdp_tensor",)


def build_sharding_rule(config, mesh):
    rule = lookup(SHARDING_RULES, config.sharding.params, "sharding.params")
    tensor = mesh.shape[parallel.TENSOR_AXIS]
    if tensor > 1 and config.sharding.params not in TENSOR_PARALLEL_RULES:
        raise ConfigError(
            f"mesh.tensor={tensor} has no effect with sharding.params={config.sharding.params!r} (every tensor "
            f"device would repeat the same work); use sharding.params='fsdp_tensor' or set mesh.tensor=1"
        )
    return rule(mesh, config.sharding.fsdp_min_size)


def build_sampler(config, name: str) -> Callable:
    """(process, model, key, num_samples, shape) -> SampleResult, options from
    config.samplers.<name>."""
    fn = lookup(SAMPLERS, name, "sampler")
    options = config.samplers.get(name, {})
    hidden = ("process", "model", "key", "num_samples", "shape", "condition", "first_index", "axis_name")
    return functools.partial(fn, **check_kwargs(fn, options, f"samplers.{name}", hidden))
