"""The Inception-v3 network of FID (Szegedy et al. 2016, "Rethinking the Inception
architecture"; as used for FID by Heusel et al. 2017 and for IS by Salimans et al. 2016).

This is the TensorFlow graph "inception-2015-12-05" in the form pytorch-fid ports it (weights
`pt_inception-2015-12-05-6726825d.pth`), the network behind the FIDs of score_sde and EDM. It
differs from torchvision's Inception-v3: 1008 classes, average pools inside the mixed blocks
that ignore padding (TF's), and a max pool in the last block's pool branch.

    pixels [B, H, W, 3] on 0..255 -> bilinear resize to 299 x 299 (half-pixel centres, no
    antialiasing: torch's `interpolate(align_corners=False)`) -> x / 127.5 - 1
    -> stem (5 conv, 2 max pools) -> Mixed_5b..5d (A) -> 6a (B) -> 6b..6e (C) -> 7a (D)
    -> 7b, 7c (E) -> global average pool: 'pool3' [B, 2048]
    -> fc: 'logits' = pool3 W + b [B, 1008]; 'logits_unbiased' = pool3 W (what Salimans et
    al.'s IS code and torch-fidelity's IS use).

Every convolution is conv (no bias) -> batch norm (inference: running mean/var, eps 1e-3) ->
ReLU. Convolutions and the fc run at full float32 precision (`Precision.HIGHEST`), so TPUs do
not round them to bfloat16.

Protocol (score_sde, EDM; the defaults here): FID between 50,000 samples and the statistics
of the whole training split (`DEFAULT_NUM_SAMPLES`, `REFERENCE_SPLIT`); samples are first
rounded to uint8 pixels (as EDM's PNGs and score_sde's uint8 arrays), grey images repeated over
3 channels, then resized as above whatever their size; IS over 10 splits of the same 50,000.

Weights: an .npz whose keys are the flax parameter paths joined by '/' (e.g.
'Mixed_5b/branch5x5_2/conv/kernel' [5, 5, 48, 64] HWIO; 'Mixed_5b/branch5x5_2/bn/scale',
'.../bn/bias', '.../bn/mean', '.../bn/var'; 'fc/kernel' [2048, 1008], 'fc/bias' [1008]) plus
'__source_sha256__' (SHA-256 of the .pth it came from) and '__content_sha256__' (of the arrays,
see `content_sha256`). experiments/convert_inception_weights.py writes it from the pytorch-fid
file; `load_weights` checks the file, both hashes and every shape.
"""
from __future__ import annotations

import functools
import hashlib
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

FEATURE_DIM = 2048
NUM_LOGITS = 1008
INPUT_SIZE = 299
# pytorch-fid publishes the weights as pt_inception-2015-12-05-6726825d.pth: the first eight hex
# digits of the file's SHA-256 (torch.hub's check_hash convention).
SOURCE_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
SOURCE_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{SOURCE_FILENAME}"
SOURCE_SHA256_PREFIX = "6726825d"
DEFAULT_NUM_SAMPLES = 50_000
REFERENCE_SPLIT = "train"
FEATURE_EXTRACTOR_ID = "inception-2015-12-05/pool3"  # metadata of reference statistics
HOW_TO_GET = (f"download {SOURCE_URL} and run `python -m experiments.convert_inception_weights "
              f"--source={SOURCE_FILENAME} --output=inception_fid.npz` (needs torch)")
_HIGHEST = jax.lax.Precision.HIGHEST


class InceptionWeightsError(ValueError):
    """The weight file is missing, corrupt, of another network or of the wrong layout."""


# --- architecture ----------------------------------------------------------------------------------

class FrozenBatchNorm(nn.Module):
    """Inference batch norm: (x - mean) / sqrt(var + eps) * scale + bias, all four are params."""

    epsilon: float = 1e-3

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        mean = self.param("mean", nn.initializers.zeros, (features,))
        var = self.param("var", nn.initializers.ones, (features,))
        return (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias


class BasicConv(nn.Module):
    """conv (no bias) -> FrozenBatchNorm -> ReLU; padding in pixels per side (TF 'VALID' = 0)."""

    features: int
    kernel: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, self.kernel, strides=self.strides, use_bias=False, precision=_HIGHEST,
                    padding=[(self.padding[0],) * 2, (self.padding[1],) * 2], name="conv")(x)
        return nn.relu(FrozenBatchNorm(name="bn")(x))


def _avg_pool_same(x):
    """3x3 stride-1 average pool over the pixels inside the image (padding not counted)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, strides=2, padding=0):
    return nn.max_pool(x, (3, 3), strides=(strides, strides), padding=((padding, padding),) * 2)


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        branch1x1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        branch5x5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        branch5x5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(branch5x5)
        branch3x3dbl = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(branch3x3dbl)
        branch_pool = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_same(x))
        return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        branch3x3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
        branch3x3dbl = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(branch3x3dbl)
        return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        branch1x1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        branch7x7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
        branch7x7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
        branch7x7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
        dbl = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
        dbl = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(dbl)
        dbl = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(dbl)
        dbl = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(dbl)
        dbl = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(dbl)
        branch_pool = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool_same(x))
        return jnp.concatenate([branch1x1, branch7x7, dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        branch3x3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        branch3x3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(branch3x3)
        branch7x7x3 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        branch7x7x3 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
        branch7x7x3 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
        branch7x7x3 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(branch7x7x3)
        return jnp.concatenate([branch3x3, branch7x7x3, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    """max_pool_branch: the FID graph's last block (Mixed_7c) pools with a max, not an average."""

    max_pool_branch: bool = False

    @nn.compact
    def __call__(self, x):
        branch1x1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        branch3x3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        branch3x3 = jnp.concatenate([
            BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
            BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3)], axis=-1)
        dbl = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        dbl = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(dbl)
        dbl = jnp.concatenate([
            BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(dbl),
            BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(dbl)], axis=-1)
        pooled = _max_pool(x, strides=1, padding=1) if self.max_pool_branch else _avg_pool_same(x)
        branch_pool = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([branch1x1, branch3x3, dbl, branch_pool], axis=-1)


def resize_and_scale(pixels: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
    """pixels [B, H, W, 3] on 0..255 -> [B, size, size, 3] on [-1, 1] (bilinear, no antialias)."""
    x = jnp.asarray(pixels, jnp.float32)
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), method="bilinear", antialias=False)
    return x / 127.5 - 1.0


class InceptionV3(nn.Module):
    """FID's Inception-v3 (module docstring): pixels on 0..255 -> {'pool3', 'logits',
    'logits_unbiased'}. input_size other than 299 is for tests only (>= 75)."""

    input_size: int = INPUT_SIZE

    @nn.compact
    def __call__(self, pixels: jax.Array) -> dict[str, jax.Array]:
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"InceptionV3 takes RGB pixels [B, H, W, 3], got shape {pixels.shape} "
                             "(repeat grey images over 3 channels)")
        x = resize_and_scale(pixels, self.input_size)
        x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool(x)
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(name="Mixed_7b")(x)
        x = InceptionE(max_pool_branch=True, name="Mixed_7c")(x)
        pool3 = x.mean(axis=(1, 2))
        fc = nn.Dense(NUM_LOGITS, precision=_HIGHEST, name="fc")
        logits = fc(pool3)
        unbiased = jnp.dot(pool3, fc.variables["params"]["kernel"], precision=_HIGHEST)
        return {"pool3": pool3, "logits": logits, "logits_unbiased": unbiased}


@jax.jit
def apply_inception(params, pixels: jax.Array) -> dict[str, jax.Array]:
    """InceptionV3 at 299 x 299 on one batch; under a mesh, pass pixels sharded over the batch
    axis and params replicated, and each device computes its own rows."""
    return InceptionV3().apply({"params": params}, pixels)


def random_params(seed: int = 0) -> Any:
    """Parameters of the network's layout with random values (tests and shape checks; the
    real weights come from `load_weights`): conv and fc weights N(0, 1 / fan_in), batch norm
    scale 1, bias 0, mean 0, var 1. Drawn with numpy: tracing flax's init of 24M parameters
    compiles for minutes on a CPU."""
    rng = np.random.default_rng(seed)
    flat = {}
    for key, shape in expected_shapes().items():
        name = key.rsplit("/", 1)[-1]
        if name == "kernel":
            values = rng.standard_normal(shape, dtype=np.float32) / np.sqrt(np.prod(shape[:-1]))
        else:
            values = np.full(shape, 1.0 if name in ("scale", "var") else 0.0, np.float32)
        flat[tuple(key.split("/"))] = jnp.asarray(values)
    return traverse_util.unflatten_dict(flat)


# --- weight file -------------------------------------------------------------------------------------

@functools.cache
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """{'/'-joined parameter path: shape} of the network (the weight file's layout; the same
    for every input_size)."""
    model = InceptionV3(75)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 75, 75, 3))))["params"]
    return {"/".join(path): tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(abstract).items()}


def content_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the arrays in key order: each key, dtype, shape and little-endian bytes
    (independent of the .npz container, whose zip headers carry timestamps)."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{array.dtype.newbyteorder('<').str}|{array.shape}|".encode())
        digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def save_weights(path: str, arrays: Mapping[str, np.ndarray], source_sha256: str) -> None:
    """Writes the weight .npz (module docstring), atomically."""
    arrays = {key: np.asarray(value, np.float32) for key, value in arrays.items()}
    temporary = f"{path}.tmp.npz"
    np.savez(temporary, __source_sha256__=np.asarray(source_sha256),
             __content_sha256__=np.asarray(content_sha256(arrays)), **arrays)
    os.replace(temporary, path)


def load_weights(path: str, expected_content_sha256: str | None = None,
                 source_sha256_prefix: str = SOURCE_SHA256_PREFIX) -> Any:
    """Parameters of InceptionV3 from the .npz at `path`, after checking that it exists, that
    its arrays hash to the digest stored with them (and to `expected_content_sha256` if
    given, e.g. pinned in a config), that it was converted from the pytorch-fid file (source
    SHA-256 starts with `source_sha256_prefix`), and that every key and shape is the
    network's. Raises InceptionWeightsError with a one-line message saying what to do."""
    if not path or not os.path.isfile(path):
        raise InceptionWeightsError(f"no Inception weights at {path!r}: {HOW_TO_GET}")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError) as error:
        raise InceptionWeightsError(f"{path} is not a readable .npz ({error}): {HOW_TO_GET}") from None
    stored_digest = str(arrays.pop("__content_sha256__", ""))
    source_digest = str(arrays.pop("__source_sha256__", ""))
    digest = content_sha256(arrays)
    if digest != stored_digest:
        raise InceptionWeightsError(f"{path} is corrupt (its arrays hash to {digest[:12]}..., the file records "
                                    f"{stored_digest[:12] or 'nothing'}...): convert it again; {HOW_TO_GET}")
    if expected_content_sha256 and digest != expected_content_sha256:
        raise InceptionWeightsError(f"{path} has SHA-256 {digest}, expected {expected_content_sha256}: "
                                    f"these are not the pinned weights; {HOW_TO_GET}")
    if not source_digest.startswith(source_sha256_prefix):
        raise InceptionWeightsError(f"{path} was converted from a file with SHA-256 {source_digest[:12] or '?'}..., "
                                    f"not {SOURCE_FILENAME} ({source_sha256_prefix}...): {HOW_TO_GET}")
    expected = expected_shapes()
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    wrong = sorted(k for k in set(expected) & set(arrays) if arrays[k].shape != expected[k])
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {len(missing)} (e.g. {missing[0]})" if missing else "",
            f"unexpected {len(unexpected)} (e.g. {unexpected[0]})" if unexpected else "",
            f"wrong shape {wrong[0]} {arrays[wrong[0]].shape} != {expected[wrong[0]]}" if wrong else "") if part)
        raise InceptionWeightsError(f"{path} does not fit FID's Inception-v3 ({detail}): {HOW_TO_GET}")
    return traverse_util.unflatten_dict({tuple(k.split("/")): jnp.asarray(v) for k, v in arrays.items()})
