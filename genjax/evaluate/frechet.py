"""Gaussian statistics of feature sets and the Frechet distance between them (FID's formula).

The Frechet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau
1982; used as FID by Heusel et al. 2017, "GANs trained by a two time-scale update rule
converge to a local Nash equilibrium"):

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2}).

tr((S1 S2)^{1/2}) equals tr((S1^{1/2} S2 S1^{1/2})^{1/2}) (S1 S2 is similar to that symmetric
PSD matrix), so the square root is taken by two symmetric eigendecompositions in float64 with
eigenvalues below the round-off level (negative ones included) set to 0. This stays finite and exact for
rank-deficient covariances (fewer samples than feature dimensions), where the general
`scipy.linalg.sqrtm(S1 @ S2)` that pytorch-fid uses can return complex or inaccurate values.

Statistics are accumulated in streaming form (count, mean, scatter = sum (x - mean)(x - mean)^T)
in float64 and merged with the parallel update of Chan, Golub & LeVeque (1979), so 50k feature
vectors never need to sit in memory together and each host can reduce its own share:

    n = na + nb,  mean = ma + (mb - ma) nb / n,
    scatter = Sa + Sb + (mb - ma)(mb - ma)^T na nb / n.

The covariance is scatter / (n - 1) (numpy.cov's, as in pytorch-fid and score_sde).
Reference statistics are saved as .npz holding mu, sigma, count and metadata (the feature
extractor's id, the dataset, the protocol) so that a mismatch is caught when they are loaded.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureMoments:
    """Running moments of feature vectors: count n, mean [D] and scatter [D, D], all float64."""

    count: int
    mean: np.ndarray
    scatter: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


def empty_moments(dim: int) -> FeatureMoments:
    """Moments of no vectors of dimension `dim` (the identity of `merge_moments`)."""
    return FeatureMoments(0, np.zeros(dim, np.float64), np.zeros((dim, dim), np.float64))


def batch_moments(features: Any) -> FeatureMoments:
    """Moments of one batch of features [B, D] (any array type; computed in float64)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [batch, dim], got shape {x.shape}")
    mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    centred = x - mean
    return FeatureMoments(len(x), mean, centred.T @ centred)


def merge_moments(a: FeatureMoments, b: FeatureMoments) -> FeatureMoments:
    """Moments of the union of two sets (Chan et al. 1979; see the module docstring)."""
    if a.dim != b.dim:
        raise ValueError(f"cannot merge moments of dimension {a.dim} and {b.dim}")
    n = a.count + b.count
    if n == 0:
        return a
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    scatter = a.scatter + b.scatter + np.outer(delta, delta) * (a.count * b.count / n)
    return FeatureMoments(n, mean, scatter)


def accumulate(moments: FeatureMoments, features: Any) -> FeatureMoments:
    """moments updated with one more batch of features [B, D]."""
    return merge_moments(moments, batch_moments(features))


def moments_of_batches(batches: Iterable[Any], dim: int) -> FeatureMoments:
    """Moments of a stream of feature batches, holding one batch at a time."""
    moments = empty_moments(dim)
    for batch in batches:
        moments = accumulate(moments, batch)
    return moments


def merge_all(parts: Iterable[FeatureMoments]) -> FeatureMoments:
    """Moments of the union of many sets (e.g. every host's share)."""
    parts = list(parts)
    if not parts:
        raise ValueError("merge_all needs at least one FeatureMoments")
    total = parts[0]
    for part in parts[1:]:
        total = merge_moments(total, part)
    return total


def merge_process_moments(moments: FeatureMoments) -> FeatureMoments:
    """Moments over all processes' shares: each process passes its own, all get the union.

    Gathers the per-process (count, mean, scatter) with
    `jax.experimental.multihost_utils.process_allgather` and merges them in a fixed order
    (process 0, 1, ...), so every process computes the same float64 result. With one process
    this returns `moments` unchanged.
    """
    import jax

    if jax.process_count() == 1:
        return moments
    from jax.experimental import multihost_utils

    # float64 travels bit-exactly as pairs of uint32 (jax without x64 would round it to float32).
    local = np.concatenate([[float(moments.count)], moments.mean, moments.scatter.ravel()]).view(np.uint32)
    gathered = np.asarray(multihost_utils.process_allgather(local, tiled=False))
    dim = moments.dim
    parts = []
    for row in gathered.astype(np.uint32):
        values = row.view(np.float64)
        parts.append(FeatureMoments(int(round(values[0])), values[1:1 + dim].copy(),
                                    values[1 + dim:].reshape(dim, dim).copy()))
    return merge_all(parts)


def gaussian_statistics(moments: FeatureMoments) -> tuple[np.ndarray, np.ndarray]:
    """(mu [D], sigma [D, D]) with sigma = scatter / (n - 1), the unbiased covariance."""
    if moments.count < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {moments.count}")
    return moments.mean.copy(), moments.scatter / (moments.count - 1)


def _clip_round_off(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix with those below its round-off level
    (dim * eps * largest |eigenvalue|, negative ones included) set to 0: their square roots
    would otherwise add ~sqrt(eps) each to the trace of a rank-deficient matrix's root."""
    floor = len(eigenvalues) * np.finfo(np.float64).eps * np.max(np.abs(eigenvalues), initial=0.0)
    return np.where(eigenvalues > floor, eigenvalues, 0.0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (round-off eigenvalues -> 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(_clip_round_off(eigenvalues))) @ eigenvectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^{1/2}) = tr((S1^{1/2} S2 S1^{1/2})^{1/2}) for symmetric PSD S1, S2."""
    root1 = _psd_sqrt(np.asarray(sigma1, np.float64))
    inner = root1 @ np.asarray(sigma2, np.float64) @ root1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(_clip_round_off(eigenvalues)).sum())


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the module's d^2;
    FID when the statistics are Inception pool3 features). Non-negative up to round-off."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))


def frechet_distance_of_features(features1: Any, features2: Any) -> float:
    """Frechet distance between the Gaussian fits of two feature sets [N1, D] and [N2, D]."""
    mu1, sigma1 = gaussian_statistics(batch_moments(features1))
    mu2, sigma2 = gaussian_statistics(batch_moments(features2))
    return frechet_distance(mu1, sigma1, mu2, sigma2)


# --- reference statistics on disk ----------------------------------------------------------------

def save_statistics(path: str, mu: np.ndarray, sigma: np.ndarray, count: int, metadata: Mapping[str, Any]) -> None:
    """Writes mu, sigma, count and metadata (JSON; e.g. feature extractor id, dataset, split,
    resize rule) to an .npz file, atomically (a temporary file renamed into place)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp.npz")
    np.savez(temporary, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64),
             count=np.asarray(count, np.int64), metadata=np.asarray(json.dumps(dict(metadata), sort_keys=True)))
    os.replace(temporary, path)


def load_statistics(path: str, expect: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray, int, dict]:
    """(mu, sigma, count, metadata) from `save_statistics`' file.

    Raises FileNotFoundError if the file is missing and ValueError if any (key, value) in
    `expect` differs from the stored metadata (statistics of another feature extractor or
    dataset give meaningless distances).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no reference statistics at {path}: compute them first "
                                "(same feature extractor and dataset)")
    with np.load(path, allow_pickle=False) as stored:
        mu, sigma, count = stored["mu"], stored["sigma"], int(stored["count"])
        metadata = json.loads(str(stored["metadata"]))
    for key, value in (expect or {}).items():
        if metadata.get(key) != json.loads(json.dumps(value)):  # as stored: tuples became lists
            raise ValueError(f"reference statistics {path} have {key}={metadata.get(key)!r}, expected {value!r}: "
                             "delete the file to recompute them")
    return mu, sigma, count, metadata


def load_or_compute_statistics(path: str, compute: Callable[[], FeatureMoments], metadata: Mapping[str, Any],
                               write: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, sigma, count) of the reference set: read from `path` if it was saved with this
    metadata, else `compute()`d and (if `write`, e.g. on process 0 only) saved there.

    A file at `path` with other metadata raises ValueError (it is not overwritten): point the
    path elsewhere or delete the file.

    Multi-process: process 0 alone decides whether the file is there and reads it; every
    process takes the same branch (`compute` runs collectives, so a process that found the
    file half-written by process 0 must not skip it) and receives process 0's statistics, so
    only process 0 needs to see the file, and only it writes (with `write`).
    """
    import jax

    if jax.process_count() == 1:
        if os.path.exists(path):
            mu, sigma, count, _ = load_statistics(path, expect=metadata)
            return mu, sigma, count
        moments = compute()
        mu, sigma = gaussian_statistics(moments)
        if write:
            save_statistics(path, mu, sigma, moments.count, metadata)
        return mu, sigma, moments.count
    from jax.experimental import multihost_utils

    lead = jax.process_index() == 0
    status, loaded, refusal = 0, None, ""
    if lead and os.path.exists(path):
        try:
            loaded = load_statistics(path, expect=metadata)[:3]
            status = 1
        except ValueError as error:
            status, refusal = 2, str(error)
    status = int(multihost_utils.broadcast_one_to_all(np.int32(status)))
    if status == 2:
        raise ValueError(refusal or f"process 0 refused the reference statistics at {path} (its error line says why)")
    if status == 0:
        moments = compute()
        mu, sigma = gaussian_statistics(moments)
        if write and lead:
            save_statistics(path, mu, sigma, moments.count, metadata)
        return mu, sigma, moments.count
    dim = int(multihost_utils.broadcast_one_to_all(np.int32(len(loaded[0]) if lead else 0)))
    flat = np.zeros(1 + dim + dim * dim, np.float64)
    if lead:
        flat = np.concatenate([[float(loaded[2])], loaded[0], np.asarray(loaded[1]).ravel()])
    # float64 travels bit-exactly as pairs of uint32 (jax without x64 would round it to float32).
    flat = np.asarray(multihost_utils.broadcast_one_to_all(flat.view(np.uint32))).astype(np.uint32).view(np.float64)
    return flat[1:1 + dim].copy(), flat[1 + dim:].reshape(dim, dim).copy(), int(round(flat[0]))
