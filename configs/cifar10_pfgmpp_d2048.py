"""PFGM++ with D = 2048 on CIFAR-10, unconditional (Xu et al. 2023, Table 1; Newbeeer/pfgmpp
train.py --pfgmpp=1 --aug_dim=2048): EDM's recipe (configs/cifar10_edm_ddpmpp.py) with the
PFGM++ perturbation kernel p_r(x | y) proportional to (|x - y|^2 + r^2)^(-(N+D)/2),
r = sigma sqrt(D), its prior at r_max = 80 sqrt(D), and the same preconditioned DDPM++ network
(55,732,739 parameters), loss and 18-step Heun sampler (35 NFE). NCSN++ instead:
--config.model.kwargs.embedding=fourier (see configs/cifar10_edm_ncsnpp.py for its other
fields).

    python -m experiments.main --config=configs/cifar10_pfgmpp_d2048.py --workdir=gs://BUCKET/cifar10_pfgmpp_d2048

Hardware meant for: the paper trained on 8 V100s or 4 A100s. Check fit and FLOPs per device
without data:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.main \
        --config=configs/cifar10_pfgmpp_d2048.py --mode=compile

Data: `tfds build cifar10 --file_format=array_record` once. Paper's figure to reach: FID 1.91
(EDM, D -> infinity, on the same setup: 1.98).
"""
from configs import cifar10_common


def get_config():
    config = cifar10_common.edm_config("ddpmpp")
    config.process.name = "pfgmpp"
    config.process.kwargs.augment_dim = 2048.0
    return config
