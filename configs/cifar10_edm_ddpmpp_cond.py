"""EDM on CIFAR-10, class-conditional: configs/cifar10_edm_ddpmpp.py with 10 classes (the label
embedding added to the noise embedding; NVlabs/edm train.py --cond=1 --arch=ddpmpp), 55,734,147
parameters.

    python -m experiments.main --config=configs/cifar10_edm_ddpmpp_cond.py --workdir=gs://BUCKET/cifar10_edm_ddpmpp_cond
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.main \
        --config=configs/cifar10_edm_ddpmpp_cond.py --mode=compile

Paper's figure to reach: FID 1.79 (35 NFE; with augmentation).
"""
from configs import cifar10_common


def get_config():
    return cifar10_common.edm_config("ddpmpp", num_classes=10)
