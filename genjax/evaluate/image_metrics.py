"""FID, Inception Score and KID of sample sets in --mode=evaluate (config.evaluate.inception_weights).

The protocol (score_sde, EDM): Inception-v3 with the pytorch-fid weights (converted by
experiments/convert_inception_weights.py, checked by hash), pool3 features for FID and KID,
logits for IS (10 splits); reference statistics of the TRAINING split (config.data.split) at
the training resolution, computed once through the same feature code and cached as .npz
(mu, sigma, count, metadata; config.evaluate.reference_stats, default
DIR/eval/inception_reference.npz) beside the first `KID_REFERENCE_SIZE` reference features for
KID; samples are mapped to 8-bit pixels (`image_grid.to_uint8`), grey images repeated over 3
channels, and resized bilinearly to 299 inside the network. Papers use 50,000 samples
(config.evaluate.num_samples).

Every process passes its share of the reference images and of the samples; features run on
the mesh split over the batch axes (`features.stream_features`) and moments merge across
processes. Only process 0 writes the cache; the others take its statistics
(`frechet.load_or_compute_statistics`).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np

from genjax import workdir as workdir_lib
from genjax.evaluate import features as features_lib
from genjax.evaluate import frechet, inception, kid
from genjax.evaluate.image_grid import to_uint8
from genjax.evaluate.inception_score import inception_score
from genjax.train.parallel import BATCH_AXES

FEATURE_BATCH = 250
KID_REFERENCE_SIZE = 10_000


@dataclasses.dataclass(frozen=True)
class InceptionReference:
    """Inception parameters and the reference set's statistics."""
    params: Any
    mu: np.ndarray
    sigma: np.ndarray
    count: int
    kid_features: np.ndarray


def check_inception_config(config) -> None:
    """ValueError on one line if evaluate.inception_weights names no file (how to make it)."""
    path = config.evaluate.inception_weights
    if path and not os.path.isfile(path):
        raise ValueError(f"evaluate.inception_weights={path!r} does not exist: {inception.HOW_TO_GET}, "
                         f"or set evaluate.inception_weights='' to skip FID/IS/KID")


def reference_path(config, workdir) -> str:
    return config.evaluate.reference_stats or str(workdir_lib.resolve(workdir) / "eval" / "inception_reference.npz")


def _mesh_axis(experiment):
    mesh = experiment.mesh
    axes = tuple(axis for axis in BATCH_AXES if axis in mesh.shape)
    return mesh, axes


def _apply(params, pixels):
    return inception.apply_inception(params, pixels)


def load_reference(experiment, workdir, apply_fn=None, params=None) -> InceptionReference:
    """The Inception parameters (config.evaluate.inception_weights, checked against
    evaluate.inception_sha256 when set) and the training split's reference statistics, from the
    cache or computed (all processes) and cached by process 0. `apply_fn`, `params`: for tests."""
    config = experiment.config
    apply_fn = apply_fn or _apply
    if params is None:
        params = inception.load_weights(config.evaluate.inception_weights, config.evaluate.inception_sha256 or None)
    data = config.data
    metadata = {"features": "inception_v3_pool3", "weights": config.evaluate.inception_sha256 or "unpinned",
                "dataset": data.tfds_name if data.name == "tfds" else data.name, "split": data.split,
                "resolution": int(data.resolution)}
    source = experiment.image_dataset.source(data)
    mesh, axes = _mesh_axis(experiment)

    def batches():
        return features_lib.source_pixel_batches(source, FEATURE_BATCH, jax.process_index(), jax.process_count(),
                                                 image_key=data.image_key, resolution=int(data.resolution))

    kept = {}

    def compute():
        moments, outputs = features_lib.stream_features(apply_fn, params, batches(), "pool3", keep=("pool3",),
                                                        mesh=mesh, batch_axis=axes)
        kept["pool3"] = outputs["pool3"][:KID_REFERENCE_SIZE]
        return moments

    path = reference_path(config, workdir)
    kid_path = path[:-len(".npz")] + "_kid.npy" if path.endswith(".npz") else path + "_kid.npy"
    lead = jax.process_index() == 0
    mu, sigma, count = frechet.load_or_compute_statistics(path, compute, metadata, write=lead)
    if "pool3" not in kept:  # read from the cache: process 0 says whether the KID features are there too
        missing = lead and not os.path.exists(kid_path)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            missing = bool(multihost_utils.broadcast_one_to_all(np.int32(missing)))
        if missing:  # statistics cached without KID features (another tool wrote them): all compute them
            compute()
    if "pool3" in kept:
        kid_features = kept["pool3"]
        if lead:
            np.save(kid_path, kid_features.astype(np.float32))
    else:  # only process 0 reports metrics, so only it needs them
        kid_features = np.load(kid_path) if lead else None
    return InceptionReference(params, mu, sigma, count, kid_features)


def sample_metrics(experiment, reference: InceptionReference, samples: np.ndarray, key: jax.Array,
                   apply_fn=None) -> dict[str, float]:
    """{'fid', 'inception_score', 'inception_score_std', 'kid', 'kid_std' (process 0), ...} of `samples`
    [N, H, W, C] in the data range (every process passes the whole set; each computes the
    features of its contiguous share), with the feature pass's wall time and throughput
    (`inception_seconds`, `inception_images_per_second`: images of all processes per second)."""
    apply_fn = apply_fn or _apply
    pixels = features_lib.to_rgb(to_uint8(samples, experiment.data_range))
    share = len(pixels) // jax.process_count()
    start = jax.process_index() * share
    local = pixels[start:start + share]
    mesh, axes = _mesh_axis(experiment)
    batches = (local[i:i + FEATURE_BATCH] for i in range(0, len(local), FEATURE_BATCH))
    start_time = time.perf_counter()
    moments, outputs = features_lib.stream_features(apply_fn, reference.params, batches, "pool3",
                                                    keep=("pool3", "logits"), mesh=mesh, batch_axis=axes)
    seconds = time.perf_counter() - start_time
    mu, sigma = frechet.gaussian_statistics(moments)
    score, score_std = inception_score(outputs["logits"], num_splits=min(10, len(outputs["logits"])))
    metrics = {"fid": frechet.frechet_distance(mu, sigma, reference.mu, reference.sigma),
               "inception_score": score, "inception_score_std": score_std,
               "fid_num_samples": int(moments.count), "fid_reference_count": int(reference.count),
               "inception_seconds": seconds, "inception_images_per_second": float(moments.count) / max(seconds, 1e-9)}
    if reference.kid_features is not None:  # process 0 (the one that reports)
        metrics["kid"], metrics["kid_std"] = kid.kernel_inception_distance(key, outputs["pool3"],
                                                                           reference.kid_features)
    return metrics
