"""EDM on CIFAR-10, unconditional, the "VE" network of Karras et al. 2022
(config F, Table 2; NVlabs/edm train.py --cond=0 --arch=ncsnpp).

    python -m experiments.main --config=configs/cifar10_edm_ncsnpp.py --workdir=gs://BUCKET/cifar10_edm_ncsnpp

Network: EDM's SongUNet as NCSN++ (Fourier embedding, residual input pyramid, FIR (1, 3, 3, 1) resampling): 128 channels, multipliers (2, 2, 2), 4 residual blocks
per level, attention at 16x16, dropout 0.13; 56,395,523 parameters (EDM's count without its
augmentation-label layer). Training, EMA and sampler: EDM's recipe (configs/cifar10_common.py
`edm_config`): EDM preconditioning and loss, Adam 1e-3 with 10M images of warm-up, batch 512
for 200M images, EMA half-life 500k images with warm-up, 18-step Heun (35 NFE).

Not reproduced: EDM's non-leaking geometric augmentation (--augment=0.12, with the
augmentation labels fed to the network); runs here train without augmentation.

Hardware meant for: EDM trained it on 8 V100s in about 2 days. Check fit and FLOPs per device
without data:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.main \
        --config=configs/cifar10_edm_ncsnpp.py --mode=compile

Data: `tfds build cifar10 --file_format=array_record` once. Paper's figure to reach: FID 1.98
(35 NFE; with augmentation).
"""
from configs import cifar10_common


def get_config():
    return cifar10_common.edm_config("ncsnpp", num_classes=0)
