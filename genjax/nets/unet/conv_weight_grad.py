"""A 2-D convolution whose kernel gradient is computed as k_h k_w matrix products on XLA:CPU.

Reverse-mode autodiff of `lax.conv_general_dilated` gives the kernel gradient as a
"backward-filter" convolution, which XLA:CPU runs 3-6x slower than the forward convolution
(`python -m experiments.benchmark_conv_grad`). For a stride-s convolution with explicit
padding, y[b, h, w, o] = sum_{i, j, c} x_pad[b, s h + i, s w + j, c] W[i, j, c, o], the same
gradient is, tap by tap, one matrix product with the long batch-and-pixel axis contracted:

    dL/dW[i, j] = X_ij^T dY,    X_ij = x_pad[:, i : i + s (H_out - 1) + 1 : s, j : ... : s, :]
                                reshaped to [B H_out W_out, C_in],  dY: [B H_out W_out, C_out],

which XLA:CPU runs near its matmul peak. `conv_general_dilated` below is a drop-in for
flax's `nn.Conv(conv_general_dilated=...)`: the forward pass and the input gradient are
XLA's own; only the kernel gradient is replaced, and only on CPU (`lax.platform_dependent`:
GPU and TPU keep their native backward-filter convolution). Dilated, grouped or non-NHWC
convolutions, and narrow ones (MIN_TAP_CHANNELS), fall back to `lax.conv_general_dilated`
unchanged.

It is a `jax.custom_vjp`, so it supports reverse mode only: the U-Nets use it in train mode
(where the loss is differentiated in reverse) and the plain convolution in eval mode, where
the likelihood differentiates the network in forward mode (Hutchinson's jvp).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

# Narrower convolutions keep XLA's kernel gradient: for a few channels the k_h k_w thin
# products cost more than they save (configs/digits.py's 16-32-channel U-Net steps 1.3x slower
# with them; the CIFAR-10 DDPM++ step, 128-256 channels, 1.2x faster).
MIN_TAP_CHANNELS = 64

# flax's dimension numbers for 2-D convolutions: NHWC inputs and outputs, HWIO kernels.
_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`lax.conv_general_dilated` (same arguments) with the tap-wise kernel gradient on CPU
    (for kernels with at least MIN_TAP_CHANNELS input and output channels)."""
    plain = (lhs.ndim == 4 and feature_group_count == 1 and not kwargs and min(rhs.shape[-2:]) >= MIN_TAP_CHANNELS
             and all(d == 1 for d in (lhs_dilation or (1, 1))) and all(d == 1 for d in (rhs_dilation or (1, 1)))
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC)
    if plain and isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    if not plain or any(p < 0 for pair in padding for p in pair):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision, **kwargs)
    return _conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding), precision)


def _native(x, w, strides, padding, precision):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, padding, precision):
    return _native(x, w, strides, padding, precision)


def _conv_fwd(x, w, strides, padding, precision):
    return _native(x, w, strides, padding, precision), (x, w)


def kernel_gradient_by_taps(x, dy, kernel_shape, strides, padding):
    """dL/dW [k_h, k_w, C_in, C_out] of y = conv(x, W) from dy = dL/dy, one matmul per tap."""
    (pad_h, pad_w), (stride_h, stride_w) = padding, strides
    x = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    batch, out_h, out_w, out_channels = dy.shape
    flat_dy = dy.reshape(-1, out_channels)
    rows = []
    for i in range(kernel_shape[0]):
        taps = []
        for j in range(kernel_shape[1]):
            window = lax.slice(x, (0, i, j, 0),
                               (batch, i + stride_h * (out_h - 1) + 1, j + stride_w * (out_w - 1) + 1, x.shape[-1]),
                               (1, stride_h, stride_w, 1))
            taps.append(lax.dot_general(window.reshape(-1, x.shape[-1]), flat_dy, (((0,), (0,)), ((), ())),
                                        preferred_element_type=jnp.float32))
        rows.append(jnp.stack(taps))
    return jnp.stack(rows)


def _conv_bwd(strides, padding, precision, residuals, dy):
    x, w = residuals
    _, input_vjp = jax.vjp(lambda x: _native(x, w, strides, padding, precision), x)
    (dx,) = input_vjp(dy)

    def by_taps(x, dy):
        return kernel_gradient_by_taps(x, dy, w.shape, strides, padding).astype(w.dtype)

    def native(x, dy):
        return jax.vjp(lambda w: _native(x, w, strides, padding, precision), w)[1](dy)[0]

    dw = lax.platform_dependent(x, dy, cpu=by_taps, default=native)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)
