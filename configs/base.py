"""The base config every experiment overrides. Not an experiment itself: it names every
field a run reads, with a working default, so a command-line override of a field that does
not exist here is rejected.

Sections: data, process, model, objective, optimizer, training, mesh, sampling, samplers
(per-sampler options), evaluate.
"""
import ml_collections
from ml_collections import config_dict

from genjax.data.images.datasets import default_data_fields


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # model init, training noise, data order and sampling all derive from it

    config.data = ml_collections.ConfigDict()
    config.data.name = "checkerboard"
    config.data.num_train_examples = 1 << 16  # drawn once from the data key, then shuffled per epoch
    # Image datasets (data.name digits | tfds | image_folder; genjax/data/images/datasets.py):
    # tfds_name, folder, split, data_dir, image_key, label_key ("" = unlabelled), channels,
    # resolution (the image size; others are centre-cropped and resized), random_flip, in_memory.
    config.data.update(default_data_fields())

    config.process = ml_collections.ConfigDict()
    config.process.name = "vp"
    config.process.kwargs = ml_collections.ConfigDict({"beta_min": 0.1, "beta_max": 20.0})

    config.model = ml_collections.ConfigDict()
    config.model.name = "mlp"
    config.model.output = "noise"  # what the network predicts: noise | score | denoised | edm (Karras et al. preconditioning)
    config.model.kwargs = ml_collections.ConfigDict(
        {"hidden_dim": 256, "num_layers": 3, "embedding": "sinusoidal", "embedding_dim": 64, "time_scale": 1000.0}
    )
    config.model.noise_input = "time"  # what the network is fed as its noise level: time t | sigma (sigma(t), score_sde's VE)
    config.model.num_classes = 0  # > 0: class-conditional on the data's labels (passed to the network); 0: unconditional

    config.objective = ml_collections.ConfigDict()
    config.objective.name = "dsm"
    config.objective.kwargs = ml_collections.ConfigDict({"weighting": "sigma_squared", "reduce": "mean"})

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 200
    config.optimizer.decay = "constant"  # constant | cosine (after warmup)
    config.optimizer.grad_clip_norm = 1.0  # global-norm clipping; 0 disables
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.weight_decay = 0.0

    config.training = ml_collections.ConfigDict()
    config.training.num_steps = 10_000
    config.training.batch_size = 512  # global batch, split over the mesh's data axis
    config.training.ema_decay = 0.999
    config.training.ema_rampup_ratio = 0.0  # > 0: EMA half-life capped at this times the steps taken (EDM: 0.05)
    config.training.log_every = 500
    config.training.sync_every = 10  # block on the loss this often (keeps XLA's dispatch queue short)
    config.training.checkpoint_every = 2_000
    config.training.keep_checkpoints = 3
    config.training.grad_accum_steps = 1  # micro-batches per step (same update, less memory)
    config.training.steps_per_dispatch = 1  # train steps per jitted call (lax.scan over batches)
    config.training.allow_schedule_change = False  # resume even if a cosine horizon (num_steps) moved

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # pure data parallelism; -1: the devices left over by the other axes
    config.mesh.fsdp = 1  # batch and large parameters split (FSDP)
    config.mesh.tensor = 1  # tensor parallelism (needs sharding.params = fsdp_tensor)
    config.mesh.num_slices = 1  # >1: the data axis spans slices over DCN (hybrid mesh)

    config.sharding = ml_collections.ConfigDict()
    config.sharding.params = "replicated"  # replicated | fsdp | fsdp_tensor (parameters and optimizer state)
    config.sharding.fsdp_min_size = 1 << 14  # smaller leaves stay replicated under fsdp

    config.sampling = ml_collections.ConfigDict()
    config.sampling.sampler = "euler_maruyama"  # used by --mode=sample and for the picture
    config.sampling.num_samples = 10_000
    # Global samples per compiled chunk (0: the whole set at once). Each finished chunk is saved, so an
    # interrupted --mode=sample resumes; memory grows with the chunk, not with num_samples.
    config.sampling.chunk_size = 0
    # Classifier-free guidance weight w (Ho & Salimans 2022): (1 + w) cond - w uncond, 0 = off (EDM's
    # "guidance scale" is 1 + w). Needs a class-conditional network trained with model.kwargs.label_dropout > 0.
    config.sampling.guidance = 0.0

    config.samplers = ml_collections.ConfigDict()
    config.samplers.euler_maruyama = ml_collections.ConfigDict({"num_steps": 500, "denoise_final": True})
    # step_control: per_example (fewest NFE per example; the sample set does not depend on the
    # chunking) | per_batch (one step size for each batch solve: fastest when examples are alike,
    # but samples depend on the chunk and device count); error_norm: rms | max.
    config.samplers.probability_flow = ml_collections.ConfigDict(
        {"solver": "tsit5", "rtol": 1e-5, "atol": 1e-5, "max_steps": 4096, "step_control": "per_example",
         "error_norm": "rms"}
    )
    config.samplers.predictor_corrector = ml_collections.ConfigDict(
        {"num_steps": 500, "predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16,
         "corrector_steps": 1, "step_size": "snr_batch", "denoise_final": True}
    )
    config.samplers.ddim = ml_collections.ConfigDict({"num_steps": 100, "eta": 0.0})
    config.samplers.edm_heun = ml_collections.ConfigDict({"num_steps": 18, "rho": 7.0, "s_churn": 0.0})

    config.evaluate = ml_collections.ConfigDict()
    config.evaluate.samplers = "euler_maruyama,probability_flow"  # comma-separated
    config.evaluate.num_samples = 10_000
    config.evaluate.nll_num_points = 2_000  # held-out points for the probability-flow NLL; 0 skips it
    config.evaluate.nll_chunk_size = 0  # held-out points per likelihood solve call (0: all at once)
    # > 0: also draw each sampler's set with this guidance weight (conditional models; as sampling.guidance)
    # and report its class accuracy beside the unguided one.
    config.evaluate.guidance = 0.0
    # FID / IS / KID of image samples (genjax/evaluate/image_metrics.py): the converted Inception-v3 weights
    # (.npz from experiments/convert_inception_weights.py; "" skips them), their pinned content SHA-256 ("" = not
    # pinned), and the reference statistics' cache (.npz; "" = DIR/eval/inception_reference.npz), computed once
    # from the training split (data.split). Papers use evaluate.num_samples = 50000.
    config.evaluate.inception_weights = ""
    config.evaluate.inception_sha256 = ""
    config.evaluate.reference_stats = ""
    config.evaluate.reference_split = "test"  # image datasets: the held-out split (NLL in bits/dim, sample metrics)
    # divergence: auto (exact up to 8 dimensions per example, Hutchinson above) | exact | hutchinson;
    # t0: where the ODE starts, log p_t0 is reported (None: the process's t_min_sample; score_sde uses 1e-5);
    # step_control, error_norm: as in samplers.probability_flow.
    config.evaluate.likelihood = ml_collections.ConfigDict(
        {"divergence": "auto", "probe": "rademacher", "num_probes": 1, "solver": "tsit5",
         "rtol": 1e-5, "atol": 1e-5, "max_steps": 4096, "step_control": "per_example", "error_norm": "rms",
         "t0": config_dict.placeholder(float)}
    )
    return config
