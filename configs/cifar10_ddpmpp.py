"""DDPM++ cont. (VP) on CIFAR-10, as score_sde's configs/vp/cifar10_ddpmpp_continuous.py
(Song et al. 2021, "Score-Based Generative Modeling through SDEs", Table 3).

    python -m experiments.main --config=configs/cifar10_ddpmpp.py --workdir=gs://BUCKET/cifar10_ddpmpp

Network: DDPM++ (61,804,419 parameters; 128 channels, multipliers (1, 2, 2, 2), 4 residual
blocks per level, attention at 16x16, positional embedding of 999 t, dropout 0.1), predicting
the noise eps (score = -eps / sigma(t)). VP SDE beta in [0.1, 20], t ~ U(1e-5, 1), loss
|| eps_theta - eps ||^2 averaged over pixels (score_sde's reduce_mean=True). Adam 2e-4, 5000
warm-up steps, gradient clipping 1, batch 128, 1.3M steps, EMA 0.9999. Data: the tfds
cifar10 train split in [-1, 1] with random flips; evaluation against the test split.
Sampling: Euler-Maruyama with 1000 steps (the paper's predictor, no corrector).
The deep variant (num_res_blocks 8, 106,632,579 parameters): --config.model.kwargs.num_blocks=8.

Hardware meant for: score_sde trained it on TPU v3-8 / 4 V100s (0.20 s per step at batch 128).
Check fit and FLOPs per device without data (simulated devices):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.main \
        --config=configs/cifar10_ddpmpp.py --mode=compile

Data first (once, on a machine with internet): `tfds build cifar10 --file_format=array_record`
into ~/tensorflow_datasets (or --config.data.data_dir=DIR).
Paper's figure to reach: FID 2.55, IS 9.58 (deep: FID 2.41), Euler-Maruyama sampler.
"""
from configs import cifar10_common


def get_config():
    config = cifar10_common.score_sde_config()
    config.process.name = "vp"
    config.process.kwargs = {"beta_min": 0.1, "beta_max": 20.0}
    config.model.name = "ddpmpp"
    config.model.output = "noise"
    config.objective.kwargs = {"weighting": "sigma_squared", "reduce": "mean"}
    config.training.ema_decay = 0.9999
    return config
