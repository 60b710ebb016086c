"""The tap-wise kernel gradient of the U-Nets' convolutions equals XLA's backward-filter
convolution, the drop-in convolution has XLA's values and gradients, and a U-Net's training
gradient is the same with and without it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from genjax.nets.unet import NCSNpp
from genjax.nets.unet import conv_weight_grad
from genjax.nets.unet.conv_weight_grad import conv_general_dilated, kernel_gradient_by_taps
from tests.test_unets import TINY, images, loss_and_grad, variables_like

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(autouse=True)
def taps_at_any_width(monkeypatch):
    """The small test convolutions take the tap-wise path too (it is skipped below 64 channels)."""
    monkeypatch.setattr(conv_weight_grad, "MIN_TAP_CHANNELS", 1)


def native(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


@pytest.mark.parametrize("kernel,strides,padding", [
    (3, (1, 1), ((1, 1), (1, 1))),
    (1, (1, 1), ((0, 0), (0, 0))),
    (3, (2, 2), ((2, 2), (2, 2))),  # the fused conv + downsample's padding, strided
    (3, (1, 2), ((0, 1), (2, 0))),  # uneven strides and padding
])
def test_tap_gradient_equals_the_backward_filter_convolution(kernel, strides, padding):
    x = jax.random.normal(jax.random.key(0), (3, 9, 10, 5))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, 5, 7))

    @jax.jit  # both gradients in one program (eagerly, each tap's slices and products are programs)
    def gradients(x, w):
        y, vjp = jax.vjp(lambda w: native(x, w, strides, padding), w)
        dy = jax.random.normal(jax.random.key(2), y.shape)
        return kernel_gradient_by_taps(x, dy, w.shape, strides, padding), vjp(dy)[0]

    got, expected = gradients(x, w)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((2, 1), (0, 3))])
def test_drop_in_convolution_has_xlas_values_and_gradients(padding):
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 4))
    w = jax.random.normal(jax.random.key(4), (3, 3, 4, 6))
    r = jax.random.normal(jax.random.key(5), native(x, w, (1, 1), padding).shape)

    def loss(conv, x, w):
        return jnp.sum(conv(x, w, (1, 1), padding, dimension_numbers=lax.conv_dimension_numbers(
            x.shape, w.shape, NHWC)) * r)

    @jax.jit  # values and gradients of both in one program
    def values_and_gradients(x, w):
        return (conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC), native(x, w, (1, 1), padding),
                jax.grad(lambda x, w: loss(conv_general_dilated, x, w), (0, 1))(x, w),
                jax.grad(lambda x, w: loss(lax.conv_general_dilated, x, w), (0, 1))(x, w))

    value, native_value, ours, xla = values_and_gradients(x, w)
    np.testing.assert_allclose(value, native_value, rtol=1e-6, atol=1e-6)
    for a, b in zip(ours, xla):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_dilated_convolutions_fall_back_to_xla():
    x, w = jnp.ones((1, 9, 9, 2)), jnp.ones((3, 3, 2, 2))
    out = conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=NHWC)
    np.testing.assert_array_equal(out, lax.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2),
                                                                dimension_numbers=NHWC))


@pytest.mark.slow  # two U-Net gradients compile (a minute on 2 cores)
def test_unet_training_gradient_is_unchanged_and_eval_mode_takes_forward_mode():
    """NCSN++'s every conv kind (3x3, 1x1 skips, the fused strided conv of the residual pyramid)."""
    network = NCSNpp(**TINY, dropout=0.1)
    x, sigma = images(), jnp.array([0.5, 2.0])
    variables = variables_like(network, x, sigma)
    key = jax.random.key(7)
    (loss, grads), (xla_loss, xla_grads) = (loss_and_grad(m, variables, x, sigma, key)
                                            for m in (network, network.clone(tap_kernel_gradient=False)))
    np.testing.assert_allclose(loss, xla_loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(xla_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Eval mode is the plain convolution: forward-mode products (Hutchinson's trace) work.
    _, tangent = jax.jvp(lambda x: network.apply(variables, x, sigma), (x,), (jnp.ones_like(x),))
    assert np.isfinite(np.asarray(tangent)).all()
