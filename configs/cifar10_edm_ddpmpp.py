"""EDM on CIFAR-10, unconditional, the "VP" network of Karras et al. 2022 (config F, Table 2;
NVlabs/edm train.py --cond=0 --arch=ddpmpp): EDM's SongUNet as DDPM++, 55,732,739 parameters;
training, EMA and sampler as `configs/cifar10_common.edm_config` says (EDM's recipe, without its
augmentation). Meant for 8 V100s (about 2 days in the paper).

    python -m experiments.main --config=configs/cifar10_edm_ddpmpp.py --workdir=gs://BUCKET/cifar10_edm_ddpmpp
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.main \
        --config=configs/cifar10_edm_ddpmpp.py --mode=compile

Data: `tfds build cifar10 --file_format=array_record` once. Paper's figure to reach: FID 1.97
(35 NFE; with augmentation).
"""
from configs import cifar10_common


def get_config():
    return cifar10_common.edm_config("ddpmpp", num_classes=0)
