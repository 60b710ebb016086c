"""Parameter counts of the CIFAR-10 (32x32x3) networks equal the reference implementations'.

Reference figures: the number of parameters of the reference networks, built with the
reference constructors and the CIFAR-10 settings and summed over `parameters()`:

- score_sde (Song et al. 2021; yang-song/score_sde_pytorch models/ncsnpp.py `NCSNpp`, which
  mirrors the JAX models/ncsnpp.py): configs/vp/cifar10_ddpmpp_continuous.py ("DDPM++ cont.
  (VP)", ~62M), configs/ve/cifar10_ncsnpp_continuous.py ("NCSN++ cont. (VE)", ~63M; its
  Fourier frequencies W are a non-trained parameter there and here), and the "deep" configs
  (num_res_blocks 8).
- EDM (Karras et al. 2022; NVlabs/edm training/networks.py `SongUNet` with train.py's
  --arch=ddpmpp / --arch=ncsnpp kwargs, channel_mult [2, 2, 2]): ~55.7M and ~56.4M; the
  Fourier frequencies are a buffer there, not counted. EDM's CIFAR-10 runs also build a
  9 -> noise-width augmentation-label layer (--augment > 0: +1152 for DDPM++, +2304 for
  NCSN++) that this network does not have; the figures below are without it. --cond=1 adds
  the label layer (10 classes).

Counted here with `jax.eval_shape` on the module's init: no parameter is allocated.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.nets.unet import DDPMpp, NCSNpp, SongUNet

EDM_DDPMPP = dict(channel_mult=(2, 2, 2), dropout=0.13)
EDM_NCSNPP = dict(channel_mult=(2, 2, 2), dropout=0.13, embedding="fourier", noise_channels_mult=2,
                  resample_filter=(1, 3, 3, 1), progressive_input="residual")

CASES = {
    # name: (network, reference count, source)
    "ddpmpp_cont_vp": (DDPMpp(), 61_804_419, "score_sde vp/cifar10_ddpmpp_continuous"),
    "ncsnpp_cont_ve": (NCSNpp(), 62_758_915, "score_sde ve/cifar10_ncsnpp_continuous"),
    "ddpmpp_deep_cont_vp": (DDPMpp(num_blocks=8), 106_632_579, "score_sde vp/cifar10_ddpmpp_deep_continuous"),
    "ncsnpp_deep_cont_ve": (NCSNpp(num_blocks=8), 107_587_075, "score_sde ve/cifar10_ncsnpp_deep_continuous"),
    "ncsnpp_output_skip_input_skip": (NCSNpp(progressive="output_skip", progressive_input="input_skip"), 61_894_924,
                                      "score_sde NCSNpp, CIFAR-10 widths, pyramids output_skip / input_skip"),
    "edm_ddpmpp": (SongUNet(**EDM_DDPMPP), 55_732_739, "EDM train.py --arch=ddpmpp"),
    "edm_ncsnpp": (SongUNet(**EDM_NCSNPP), 56_395_523, "EDM train.py --arch=ncsnpp"),
    "edm_ddpmpp_cond": (SongUNet(**EDM_DDPMPP, num_classes=10), 55_734_147, "EDM train.py --arch=ddpmpp --cond=1"),
    "edm_ncsnpp_cond": (SongUNet(**EDM_NCSNPP, num_classes=10), 56_398_339, "EDM train.py --arch=ncsnpp --cond=1"),
    "edm_song_unet_defaults": (SongUNet(), 61_804_419, "EDM SongUNet class defaults (= DDPM++ cont.)"),
    "edm_skip_skip_fir": (SongUNet(progressive="output_skip", progressive_input="input_skip", resample_filter=(1, 3, 3, 1)),
                          61_829_260, "EDM SongUNet encoder_type='skip', decoder_type='skip', filter [1, 3, 3, 1]"),
}


def parameter_count(network, resolution=32, channels=3):
    x = jnp.zeros((1, resolution, resolution, channels))
    condition = jnp.zeros((1,), jnp.int32) if network.num_classes else None
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    shapes = jax.eval_shape(lambda: network.init(keys, x, jnp.ones((1,)), condition, train=False))
    assert set(shapes) == {"params"}, f"unexpected variable collections {set(shapes)}"
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))


# The default run counts the five CIFAR-10 networks a config names; the variants (same
# blocks, other depths and pyramids) run with `pytest -m slow`.
DEFAULT_RUN = ("ddpmpp_cont_vp", "ncsnpp_cont_ve", "edm_ddpmpp", "edm_ncsnpp", "edm_ddpmpp_cond")


@pytest.mark.parametrize("name", [name if name in DEFAULT_RUN else pytest.param(name, marks=pytest.mark.slow)
                                  for name in sorted(CASES)])
def test_parameter_count_equals_the_reference(name):
    network, reference, source = CASES[name]
    assert parameter_count(network) == reference, source


def test_parameters_are_float32_whatever_the_compute_dtype():
    x = jnp.zeros((1, 8, 8, 3))
    network = NCSNpp(model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dtype="bfloat16",
                     num_classes=3)
    shapes = jax.eval_shape(lambda: network.init(jax.random.key(0), x, jnp.ones((1,)), jnp.zeros((1,), jnp.int32)))
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype("float32")}
