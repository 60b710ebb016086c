"""What the CIFAR-10 configs share: the data, and the training recipes of score_sde (Song
et al. 2021) and EDM (Karras et al. 2022). Not a config itself: configs/cifar10_*.py are."""
from configs import base

# Samples per sampling chunk (global): about 10 MB of temporaries per sample for a 60M U-Net
# (python -m experiments.benchmark_sampling_memory --cifar_unet), so 1,024 is ~1.2 GB per
# device on 8 devices and ~10 GB on one; a 50,000-sample set resumes chunk by chunk.
SAMPLING_CHUNK = 1_024


def cifar10_data(config) -> None:
    """tfds cifar10 (50,000 train / 10,000 test images, 32x32x3, 10 classes), random flips."""
    config.data.name = "tfds"
    config.data.tfds_name = "cifar10"
    config.data.split = "train"
    config.data.resolution = 32
    config.data.channels = 3
    config.data.random_flip = True
    config.evaluate.reference_split = "test"


def score_sde_config():
    """score_sde's configs/default_cifar10_configs.py: Adam 2e-4 (b1 0.9, eps 1e-8), 5000
    warm-up steps then constant, gradient clipping 1, batch 128, 1.3M steps; FID on 50,000
    samples. The network, process and loss are set by each config."""
    config = base.get_config()
    cifar10_data(config)
    config.model.kwargs = {}  # the network's own CIFAR-10 defaults
    config.optimizer.learning_rate = 2e-4
    config.optimizer.warmup_steps = 5_000
    config.optimizer.decay = "constant"
    config.optimizer.grad_clip_norm = 1.0
    config.training.batch_size = 128
    config.training.num_steps = 1_300_000
    config.training.log_every = 50
    config.training.checkpoint_every = 50_000
    config.sampling.sampler = "euler_maruyama"
    config.samplers.euler_maruyama.num_steps = 1_000
    config.sampling.num_samples = 50_000
    config.sampling.chunk_size = SAMPLING_CHUNK
    config.evaluate.samplers = "euler_maruyama"
    config.evaluate.num_samples = 50_000
    config.evaluate.nll_num_points = 10_000
    config.evaluate.likelihood.divergence = "hutchinson"
    return config


# EDM's train.py --arch options for CIFAR-10 (SongUNet, channel_mult [2, 2, 2], dropout 0.13).
EDM_ARCHITECTURES = {
    "ddpmpp": {"channel_mult": (2, 2, 2), "dropout": 0.13},
    "ncsnpp": {"channel_mult": (2, 2, 2), "dropout": 0.13, "embedding": "fourier", "noise_channels_mult": 2,
               "resample_filter": (1, 3, 3, 1), "progressive_input": "residual"},
}
EDM_BATCH = 512
EDM_HALF_LIFE_IMAGES = 500_000


def edm_config(architecture: str, num_classes: int = 0):
    """EDM's CIFAR-10 recipe (Karras et al. 2022, config F; NVlabs/edm train.py): the EDM
    process (sigma in [0.002, 80], sigma_data 0.5, ln sigma ~ N(-1.2, 1.2^2)), preconditioned
    denoiser, lambda(sigma) loss summed over pixels, Adam 1e-3 (b2 0.999, eps 1e-8) with a
    linear warm-up over 10M images and no clipping, batch 512 for 200M images (390,625
    steps), EMA half-life 500k images with warm-up ratio 0.05, dropout 0.13, 18-step Heun
    sampler (35 NFE). Not reproduced: EDM's non-leaking geometric augmentation (--augment=0.12,
    with the augmentation labels fed to the network); runs here train without it."""
    config = base.get_config()
    cifar10_data(config)
    config.process.name = "edm"
    config.process.kwargs = {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "p_mean": -1.2, "p_std": 1.2}
    config.model.name = "song_unet"
    config.model.output = "edm"
    config.model.kwargs = dict(EDM_ARCHITECTURES[architecture])
    config.model.num_classes = num_classes
    config.objective.kwargs = {"weighting": "edm", "reduce": "sum"}
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 10_000_000 // EDM_BATCH
    config.optimizer.decay = "constant"
    config.optimizer.grad_clip_norm = 0.0
    config.training.batch_size = EDM_BATCH
    config.training.num_steps = 200_000_000 // EDM_BATCH
    config.training.ema_decay = 0.5 ** (EDM_BATCH / EDM_HALF_LIFE_IMAGES)
    config.training.ema_rampup_ratio = 0.05
    config.training.log_every = 100
    config.training.checkpoint_every = 10_000
    config.sampling.sampler = "edm_heun"
    config.samplers.edm_heun = {"num_steps": 18, "rho": 7.0, "s_churn": 0.0}
    config.sampling.num_samples = 50_000
    config.sampling.chunk_size = SAMPLING_CHUNK
    config.evaluate.samplers = "edm_heun"
    config.evaluate.num_samples = 50_000
    config.evaluate.nll_num_points = 10_000
    config.evaluate.likelihood.divergence = "hutchinson"
    return config
