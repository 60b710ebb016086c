"""PFGM++ with D = 2048 on CIFAR-10, unconditional (Xu et al. 2023, Table 1; Newbeeer/pfgmpp
train.py --pfgmpp=1 --aug_dim=2048): configs/cifar10_edm_ddpmpp.py (EDM's recipe, the DDPM++
network, 55,732,739 parameters, 18-step Heun) with the PFGM++ kernel p_r(x | y) proportional
to (|x - y|^2 + r^2)^(-(N+D)/2), r = sigma sqrt(D), and its prior at r_max = 80 sqrt(D).

    python -m experiments.main --config=configs/cifar10_pfgmpp_d2048.py --workdir=gs://BUCKET/cifar10_pfgmpp_d2048
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.main \
        --config=configs/cifar10_pfgmpp_d2048.py --mode=compile

Paper's figure to reach: FID 1.91 (EDM, D -> infinity, on the same setup: 1.98).
"""
from configs import cifar10_common


def get_config():
    config = cifar10_common.edm_config("ddpmpp")
    config.process.name = "pfgmpp"
    config.process.kwargs.augment_dim = 2048.0
    return config
