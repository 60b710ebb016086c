"""NCSN++ cont. (VE) on CIFAR-10, as score_sde's configs/ve/cifar10_ncsnpp_continuous.py
(Song et al. 2021, Table 3).

    python -m experiments.main --config=configs/cifar10_ncsnpp.py --workdir=gs://BUCKET/cifar10_ncsnpp

Network: NCSN++ (62,758,915 parameters; 128 channels, multipliers (1, 2, 2, 2), 4 residual
blocks per level, attention at 16x16, FIR (1, 3, 3, 1) resampling, residual input pyramid,
Fourier embedding (scale 16) of log sigma, dropout 0.1), fed sigma(t) and predicting the score
(its output divided by sigma, score_sde's scale_by_sigma). VE SDE sigma in [0.01, 50],
t ~ U(1e-5, 1), loss || sigma s_theta + eps ||^2 summed over pixels (score_sde's
reduce_mean=False). Adam 2e-4, 5000 warm-up steps, clipping 1, batch 128, 1.3M steps, EMA
0.999. Data in [0, 1] (score_sde's data.centered=False for VE), random flips. Sampling:
predictor-corrector, reverse-diffusion predictor and one Langevin corrector step at snr 0.16,
1000 steps, down to t = 1e-5. Deep variant (107,587,075 parameters): --config.model.kwargs.num_blocks=8.

The VE kernel here is the exact one of the SDE started at the data, sigma(t)^2 =
sigma_min^2 ((sigma_max / sigma_min)^(2t) - 1); score_sde perturbs with sigma_min (sigma_max /
sigma_min)^t, which differs only at small t.

Hardware meant for: score_sde trained it on TPU v3-8 / 4 V100s. Check fit and FLOPs per device
without data:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.main \
        --config=configs/cifar10_ncsnpp.py --mode=compile

Data: `tfds build cifar10 --file_format=array_record` once. Paper's figure to reach: FID 2.38,
IS 9.83 (deep: FID 2.20, IS 9.89), predictor-corrector sampler.
"""
from configs import cifar10_common


def get_config():
    config = cifar10_common.score_sde_config()
    config.data.value_range = (0.0, 1.0)
    config.process.name = "ve"
    config.process.kwargs = {"sigma_min": 0.01, "sigma_max": 50.0, "t_min_sample": 1e-5}
    config.model.name = "ncsnpp"
    config.model.output = "score"
    config.model.noise_input = "sigma"
    config.objective.kwargs = {"weighting": "sigma_squared", "reduce": "sum"}
    config.training.ema_decay = 0.999
    config.sampling.sampler = "predictor_corrector"
    config.samplers.predictor_corrector.num_steps = 1_000
    config.samplers.predictor_corrector.predictor = "reverse_diffusion"
    config.samplers.predictor_corrector.corrector = "langevin"
    config.samplers.predictor_corrector.snr = 0.16
    config.samplers.predictor_corrector.corrector_steps = 1
    config.evaluate.samplers = "predictor_corrector"
    return config
