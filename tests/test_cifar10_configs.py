"""The CIFAR-10 configs: each builds (every field checked, no data needed), its network has
the reference implementation's parameter count, and under FSDP the conv kernels are split.
(Their compiled steps' memory and FLOPs: `python -m experiments.benchmark_cifar10_compile`.)"""
import importlib
import math

import jax
import pytest

from genjax.experiment import build_experiment
from genjax.train.parallel import FSDP_AXIS

# Reference counts: tests/test_unet_param_counts.py (score_sde's and EDM's own constructors).
PARAMETERS = {
    "cifar10_ddpmpp": 61_804_419,
    "cifar10_ddpmpp_subvp": 61_804_419,
    "cifar10_ncsnpp": 62_758_915,
    "cifar10_edm_ddpmpp": 55_732_739,
    "cifar10_edm_ddpmpp_cond": 55_734_147,
    "cifar10_edm_ncsnpp": 56_395_523,
    "cifar10_edm_ncsnpp_cond": 56_398_339,
    "cifar10_pfgmpp_d128": 55_732_739,
    "cifar10_pfgmpp_d2048": 55_732_739,
}


def config_of(name):
    return importlib.import_module(f"configs.{name}").get_config()


def test_every_cifar10_config_is_listed():
    import os

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    shipped = {name[:-3] for name in os.listdir(root)
               if name.startswith("cifar10_") and "\ndef get_config(" in open(os.path.join(root, name)).read()}
    assert shipped == set(PARAMETERS)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_config_builds_with_the_reference_parameter_count(name):
    experiment = build_experiment(config_of(name))
    assert experiment.data_shape == (32, 32, 3)
    count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(experiment.state_shapes.params))
    assert count == PARAMETERS[name]


def test_fsdp_splits_every_large_leaf_conv_kernels_included():
    config = config_of("cifar10_ddpmpp")
    config.sharding.params = "fsdp"
    config.mesh.data, config.mesh.fsdp = 1, 8
    experiment = build_experiment(config, jax.devices()[:8])
    shapes, shardings = experiment.state_shapes.params, experiment.state_shardings.params
    flat_shapes = jax.tree_util.tree_leaves_with_path(shapes)
    convs = 0
    local_bytes = total_bytes = 0
    for (path, leaf), sharding in zip(flat_shapes, jax.tree.leaves(shardings)):
        size = math.prod(leaf.shape)
        total_bytes += 4 * size
        local_bytes += 4 * math.prod(sharding.shard_shape(leaf.shape))
        if size >= config.sharding.fsdp_min_size:
            assert FSDP_AXIS in tuple(sharding.spec), jax.tree_util.keystr(path)
            convs += leaf.ndim == 4
    assert convs > 100  # the 3x3 (and 1x1) conv kernels are among the split leaves
    assert local_bytes < total_bytes / 8 * 1.02  # the small replicated leaves (biases, norms) add 1.2 %
