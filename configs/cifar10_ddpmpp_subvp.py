"""DDPM++ cont. (sub-VP) on CIFAR-10, as score_sde's configs/subvp/cifar10_ddpmpp_continuous.py
(Song et al. 2021, Table 3): configs/cifar10_ddpmpp.py with the sub-VP SDE (eq. 17; same
beta in [0.1, 20]), whose marginal variance stays below the VP's at every t.

    python -m experiments.main --config=configs/cifar10_ddpmpp_subvp.py --workdir=gs://BUCKET/cifar10_ddpmpp_subvp

Network, loss, optimiser, data and sampler as configs/cifar10_ddpmpp.py (61,804,419 parameters;
deep variant: --config.model.kwargs.num_blocks=8). Hardware meant for: TPU v3-8 / 4 V100s, as
score_sde. Check fit and FLOPs per device without data:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.main \
        --config=configs/cifar10_ddpmpp_subvp.py --mode=compile

Data: `tfds build cifar10 --file_format=array_record` once. Paper's figure to reach: FID 2.61,
IS 9.56 (deep: FID 2.41), Euler-Maruyama sampler.
"""
from configs import cifar10_ddpmpp


def get_config():
    config = cifar10_ddpmpp.get_config()
    config.process.name = "subvp"
    return config
