"""The image U-Nets (genjax/nets/unet) on tiny widths: the batched network contract, the
conditioning, dropout, the initialisation, bf16 and remat, resampling and input checks."""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from genjax import factory
from genjax.nets.embeddings import sinusoidal_embedding
from genjax.nets.unet import DDPMpp, NCSNpp, SongUNet, resampling
from genjax.nets.unet.blocks import AttentionBlock, ConvDownsample, ResidualBlock

TINY = dict(model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,))
# One level (residual and attention blocks, no resampling) for the checks that compile the
# network's values: half of TINY's compile time; the levels are checked on TINY's shapes.
ONE_LEVEL = dict(model_channels=16, channel_mult=(1,), num_blocks=1, attn_resolutions=(8,))
KEYS = {"params": jax.random.key(0), "dropout": jax.random.key(1)}


def images(batch=2, size=8, channels=3, seed=0):
    return jax.random.normal(jax.random.key(seed), (batch, size, size, channels))


def variables_like(network, x, noise_level, condition=None, seed=0):
    """Random O(1) variables of the network's structure (from `jax.eval_shape`, no compiled
    init): weights N(0, 1 / fan_in), biases and norm offsets N(0, 0.1^2), norm scales
    1 + N(0, 0.1^2), Fourier frequencies N(0, 16^2). Unlike the real init, whose output
    layer is ~0, the output is O(1), so a change of the output is visible. Made once per
    network and input structure (the tests only read them)."""
    condition_shape = None if condition is None else (jnp.shape(condition), jnp.result_type(condition))
    return _variables_like(network, jnp.shape(x), jnp.shape(noise_level), condition_shape, seed)


@functools.lru_cache(maxsize=None)
def _variables_like(network, x_shape, noise_shape, condition_shape, seed):
    x, noise_level = jax.ShapeDtypeStruct(x_shape, jnp.float32), jax.ShapeDtypeStruct(noise_shape, jnp.float32)
    condition = None if condition_shape is None else jax.ShapeDtypeStruct(*condition_shape)
    shapes = jax.eval_shape(lambda x, noise_level, condition: network.init(KEYS, x, noise_level, condition,
                                                                          train=False), x, noise_level, condition)
    rng = np.random.RandomState(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if len(leaf.shape) >= 2:
            return rng.normal(0, 1 / math.sqrt(np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
        if "frequencies" in name:
            return rng.normal(0, 16, leaf.shape).astype(np.float32)
        return (("scale" in name) + rng.normal(0, 0.1, leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.partial(jax.jit, static_argnames=("network", "train"))
def run(network, variables, x, noise_level, condition=None, train=False, key=None):
    """network.apply, compiled once per (equal) network and input structure."""
    rngs = {"dropout": key} if train else None
    return network.apply(variables, x, noise_level, condition, train=train, rngs=rngs)


@functools.partial(jax.jit, static_argnames=("network",))
def loss_and_grad(network, variables, x, noise_level, key):
    def loss(params):
        out = network.apply({"params": params}, x, noise_level, train=True, rngs={"dropout": key})
        return jnp.mean((out - x) ** 2)

    return jax.value_and_grad(loss)(variables["params"])


def largest_difference(a, b):
    """max |a - b| on the host (numpy: no small program compiled per call)."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize("name", ["ddpmpp", "ncsnpp", "song_unet"])
@pytest.mark.parametrize("pyramids", [("none", "none"), ("input_skip", "output_skip"), ("residual", "none")])
def test_named_networks_map_images_to_float32_images_of_the_same_shape(name, pyramids):
    config = ml_collections.ConfigDict({"model": {"name": name, "num_classes": 0, "kwargs": dict(
        TINY, progressive_input=pyramids[0], progressive=pyramids[1])}})
    network = factory.build_network(config)
    x, sigma = images(), jnp.array([0.5, 2.0])
    out, _ = jax.eval_shape(lambda: network.init_with_output(KEYS, x, sigma, train=True))  # a train-mode call
    assert out.shape == x.shape and out.dtype == jnp.float32


def test_attention_sits_at_the_attention_resolutions_and_in_the_middle():
    """Equal widths at every level, so only the placement (not the parameter count) is seen:
    after each encoder block and after the last decoder block of a level whose resolution is
    listed, and once in the middle (lowest resolution)."""
    network = SongUNet(model_channels=16, channel_mult=(1, 1, 1), num_blocks=2, attn_resolutions=(8,))
    x, sigma = images(size=16), jnp.ones((2,))

    def attention_outputs():  # init's own call, captured (one trace)
        return network.init(KEYS, x, sigma, mutable=True,
                            capture_intermediates=lambda module, _: isinstance(module, AttentionBlock))["intermediates"]

    captured = jax.eval_shape(attention_outputs)
    resolutions = [captured[f"AttentionBlock_{i}"]["__call__"][0].shape[1] for i in range(len(captured))]
    assert resolutions == [8, 8, 4, 8]


def test_out_channels_sets_the_output_width():
    network = SongUNet(**TINY, out_channels=4)
    x, sigma = images(), jnp.ones((2,))
    assert jax.eval_shape(lambda: network.apply(network.init(KEYS, x, sigma), x, sigma)).shape == (2, 8, 8, 4)


def test_untrained_network_outputs_about_zero():
    """The output layer starts at ~0 (score_sde's init_scale=0, EDM's init_zero)."""
    x, sigma = images(), jnp.array([0.5, 2.0])
    network = SongUNet(model_channels=16, channel_mult=(1,), num_blocks=1, attn_resolutions=())
    variables = jax.jit(network.init)(KEYS, x, sigma)
    assert largest_difference(run(network, variables, x, sigma), 0.0) < 1e-3
    # Only the layers that close a branch start at ~0: the first convolution does not.
    params = variables["params"]
    assert float(jnp.std(params["Conv_0"]["kernel"])) > 0.05 and float(jnp.std(params["Conv_1"]["kernel"])) < 1e-4


@jax.jit
def untrained_block_outputs(x, emb):
    """{skip_rescale: (residual block output, attention block output)} at their initial weights."""
    outputs = {}
    for skip_rescale in (True, False):
        block = ResidualBlock(16, dropout=0.0, skip_rescale=skip_rescale)
        attention = AttentionBlock(skip_rescale=skip_rescale)
        outputs[skip_rescale] = (block.apply(block.init(KEYS, x, emb, False), x, emb, False),
                                 attention.apply(attention.init(KEYS, x), x))
    return outputs


@pytest.mark.parametrize("skip_rescale, factor", [(True, 1 / math.sqrt(2.0)), (False, 1.0)])
def test_untrained_blocks_are_the_rescaled_identity(skip_rescale, factor):
    """Each block closes its residual branch with a ~0 layer, so it starts as s x."""
    x, emb = images(channels=16), jax.random.normal(jax.random.key(3), (2, 64))
    residual_out, attention_out = untrained_block_outputs(x, emb)[skip_rescale]
    np.testing.assert_allclose(residual_out, factor * x, atol=1e-4)
    np.testing.assert_allclose(attention_out, factor * x, atol=1e-4)


# One network for the dropout, bf16, remat and positional-embedding checks, so that they share
# compiled programs (dropout is off in eval mode).
DROPOUT = DDPMpp(**ONE_LEVEL, dropout=0.5)


@pytest.mark.parametrize("network", [DROPOUT, NCSNpp(**ONE_LEVEL, scale_output_by_noise_level=False)],
                         ids=["positional", "fourier"])
def test_output_depends_on_each_example_s_own_noise_level(network):
    x = images()
    variables = variables_like(network, x, jnp.ones((2,)))
    a = run(network, variables, x, jnp.array([0.5, 0.5]))
    b = run(network, variables, x, jnp.array([0.5, 0.7]))
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert largest_difference(a[1], b[1]) > 1e-2


def test_scale_output_by_noise_level_divides_by_it():
    x, sigma = images(), jnp.array([0.5, 3.0])
    scaled = NCSNpp(**ONE_LEVEL)
    variables = variables_like(scaled, x, sigma)
    plain = run(scaled.clone(scale_output_by_noise_level=False), variables, x, sigma)
    np.testing.assert_allclose(run(scaled, variables, x, sigma) * sigma[:, None, None, None], plain, rtol=1e-5, atol=1e-6)


CONDITIONAL = SongUNet(**ONE_LEVEL, num_classes=3, dropout=0.0, label_dropout=0.5)


def test_class_label_changes_the_output_of_its_example_only():
    x, sigma = images(), jnp.ones((2,))
    variables = variables_like(CONDITIONAL, x, sigma, jnp.array([0, 1]))
    a = run(CONDITIONAL, variables, x, sigma, jnp.array([0, 1]))
    b = run(CONDITIONAL, variables, x, sigma, jnp.array([0, 2]))
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert largest_difference(a[1], b[1]) > 1e-2


def test_dropped_labels_use_the_null_label_of_condition_none():
    """label_dropout draws from the "dropout" rng when training; a dropped label is the null
    label (a zero one-hot, i.e. the label layer's bias), the one condition=None uses."""
    network = CONDITIONAL
    x, sigma, labels = images(), jnp.ones((2,)), jnp.array([1, 2])
    variables = variables_like(network, x, sigma, labels)
    conditioned = run(network, variables, x, sigma, labels)
    null = run(network, variables, x, sigma, None)
    assert largest_difference(conditioned[0], null[0]) > 1e-2 and largest_difference(conditioned[1], null[1]) > 1e-2
    dropped = []
    for key in range(8):
        trained = run(network, variables, x, sigma, labels, train=True, key=jax.random.key(key))
        for i in range(2):
            is_null = largest_difference(trained[i], null[i]) < 1e-5
            assert is_null or largest_difference(trained[i], conditioned[i]) < 1e-5
            dropped.append(is_null)
    assert 0 < sum(dropped) < len(dropped)


def test_dropout_only_in_training_and_from_the_dropout_key():
    """Evaluation needs no "dropout" rng (a dropout layer left on would ask for one)."""
    network = DROPOUT
    x, sigma = images(), jnp.ones((2,))
    variables = variables_like(network, x, sigma)

    def trained(key):
        return run(network, variables, x, sigma, train=True, key=jax.random.key(key))

    np.testing.assert_array_equal(trained(5), trained(5))
    assert largest_difference(trained(5), trained(6)) > 1e-2
    evaluated = run(network, variables, x, sigma)
    assert largest_difference(evaluated, trained(5)) > 1e-2


def _relative(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_bfloat16_compute_is_within_bfloat16_precision_of_float32():
    """Same float32 parameters; bf16 compute moves the output by about bf16's resolution
    (2^-8 per operation, ~1e-2 through the network), not more and not by zero. The noise
    level (999 t) and its embedding stay float32: in bf16, 999 t would be off by up to 1."""
    network = DROPOUT
    x, t = images(), jnp.array([0.3137, 0.7071])
    variables = variables_like(network, x, t)
    half = network.clone(dtype="bfloat16")
    out, out_half = run(network, variables, x, t), run(half, variables, x, t)
    assert out_half.dtype == jnp.float32
    assert 1e-3 < _relative(out_half, out) < 3e-2
    loss, loss_half = (np.mean((np.asarray(y) - np.asarray(x)) ** 2) for y in (out, out_half))
    assert abs(float(loss_half / loss) - 1) < 1e-2


def test_remat_changes_neither_the_parameters_nor_the_training_output():
    network = DROPOUT
    rematerialised = network.clone(remat=True)
    x, sigma = images(), jnp.ones((2,))
    shapes = [jax.eval_shape(lambda m=m: m.init(KEYS, x, sigma)) for m in (network, rematerialised)]
    assert jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])
    variables = variables_like(network, x, sigma)
    key = jax.random.key(5)
    np.testing.assert_allclose(run(rematerialised, variables, x, sigma, train=True, key=key),
                               run(network, variables, x, sigma, train=True, key=key), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_remat_leaves_the_loss_gradient_unchanged():
    network = NCSNpp(**TINY, dropout=0.1)
    x, sigma = images(), jnp.array([0.5, 2.0])
    variables = variables_like(network, x, sigma)
    key = jax.random.key(7)
    (loss, grads), (remat_loss, remat_grads) = (loss_and_grad(m, variables, x, sigma, key)
                                                for m in (network, network.clone(remat=True)))
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# The resampling layers compiled whole (eagerly, each of their slices and sums is a program).
downsample = jax.jit(resampling.downsample, static_argnums=1)
upsample = jax.jit(resampling.upsample, static_argnums=1)


def test_resampling_with_the_box_filter_is_average_pooling_and_nearest_neighbour():
    x = np.asarray(images(channels=2))
    np.testing.assert_allclose(downsample(x, (1, 1)), x.reshape(2, 4, 2, 4, 2, 2).mean(axis=(2, 4)), atol=1e-6)
    np.testing.assert_array_equal(upsample(x, (1, 1)), x.repeat(2, axis=1).repeat(2, axis=2))


def test_fir_resampling_keeps_a_constant_image_constant_away_from_the_border():
    """k = f f^T / (sum f)^2 with f = (1, 3, 3, 1), zero padding split evenly (upfirdn2d):
    a border pixel of the 4x4 result sees (3 + 3 + 1) / 8 of the image per axis."""
    ones = jnp.ones((1, 8, 8, 1))
    down = np.asarray(downsample(ones, (1, 3, 3, 1)))[0, :, :, 0]
    edge = np.array([7 / 8, 1, 1, 7 / 8])
    np.testing.assert_allclose(down, np.outer(edge, edge), atol=1e-6)
    up = np.asarray(upsample(ones, (1, 3, 3, 1)))[0, :, :, 0]
    edge = np.array([3 / 4] + [1] * 14 + [3 / 4])
    np.testing.assert_allclose(up, np.outer(edge, edge), atol=1e-6)


@pytest.mark.parametrize("x_shape, noise_shape, condition, message", [
    ((2, 192), (2,), None, r"images x of shape \[B, H, W, C\]"),
    ((2, 6, 6, 3), (2,), None, "divisible by 4"),
    ((2, 8, 8, 3), (2, 1), None, r"noise_level of shape \[B\]"),
    ((2, 8, 8, 3), (2,), [0, 1], "unconditional"),
])
def test_bad_inputs_are_refused_with_one_line(x_shape, noise_shape, condition, message):
    network = SongUNet(model_channels=16, channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=())
    condition = None if condition is None else jnp.array(condition)
    with pytest.raises(ValueError, match=message) as error:
        network.init(KEYS, jnp.zeros(x_shape), jnp.ones(noise_shape), condition)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(progressive="residual"), "progressive='residual'"),
    (dict(embedding="learned"), "embedding='learned'"),
    (dict(dtype="int8"), "dtype='int8'"),
    (dict(label_dropout=0.1), "needs num_classes"),
    (dict(channel_mult=()), "channel_mult"),
])
def test_bad_attributes_are_config_errors_naming_the_field(kwargs, message):
    config = ml_collections.ConfigDict({"model": {"name": "song_unet", "num_classes": 0, "kwargs": kwargs}})
    with pytest.raises(factory.ConfigError, match=message):
        factory.build_network(config)


def test_positional_features_are_score_sde_s_timestep_embedding():
    """score_sde's get_timestep_embedding (EDM's endpoint=True): frequencies 10^(-4 i / (h - 1)),
    from 1 down to exactly 1e-4, features [sin, cos] (the network swaps the halves)."""
    t = jnp.array([0.5, 321.0])
    half = 8
    frequencies = 1e-4 ** (np.arange(half) / (half - 1))
    angles = np.asarray(t)[:, None] * frequencies
    np.testing.assert_allclose(sinusoidal_embedding(t, 2 * half, endpoint=True),
                               np.concatenate([np.cos(angles), np.sin(angles)], axis=1), atol=2e-5)


def test_fused_conv_downsample_is_blur_then_strided_conv_as_score_sde_computes_it():
    """score_sde's conv_downsample_2d: pad by 2, blur with k at full resolution, then a 3x3
    convolution with stride 2; ConvDownsample convolves first and blurs with stride."""
    x = images(size=8, channels=2)
    layer = ConvDownsample(3, (1, 3, 3, 1))
    blur = np.tile(resampling.filter_2d((1, 3, 3, 1))[:, :, None, None], (1, 1, 1, 2))

    @jax.jit
    def layer_and_reference(x):
        params = layer.init(KEYS, x)["params"]["Conv_0"]
        padded = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
        blurred = jax.lax.conv_general_dilated(padded, blur, (1, 1), "VALID", feature_group_count=2,
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
        reference = jax.lax.conv_general_dilated(blurred, params["kernel"], (2, 2), "VALID",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["bias"]
        return layer.apply({"params": {"Conv_0": params}}, x), reference

    out, reference = layer_and_reference(x)
    np.testing.assert_allclose(out, reference, atol=1e-5)
