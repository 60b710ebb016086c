"""Features of a stream of image batches for FID/KID/IS, each process reading its own share.

`stream_features(apply_fn, params, batches, mesh)`: every process passes its own batches of
pixels; each batch is placed on the mesh split over `batch_axis` (params replicated), so every
device computes its rows, and the per-process results come back to that process. The feature
moments (frechet.FeatureMoments) are accumulated per process and merged across processes;
other outputs (e.g. logits for IS, features for KID) are concatenated per process and, with
`gather=True`, across processes (process 0's rows first).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from genjax.evaluate import frechet


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """[B, H, W, 1] grey -> [B, H, W, 3] (repeated), RGB unchanged."""
    pixels = np.asarray(pixels)
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def stream_features(apply_fn: Callable[[Any, Any], dict], params: Any, batches: Iterable[np.ndarray],
                    feature_key: str, keep: tuple[str, ...] = (), mesh: jax.sharding.Mesh | None = None,
                    batch_axis: str | tuple[str, ...] = "data", gather: bool = True) -> tuple[frechet.FeatureMoments, dict]:
    """(moments of outputs[feature_key] over all processes, {key: [N, ...] for key in keep}).

    apply_fn(params, pixels) -> dict of [B, ...] arrays (e.g. `inception.apply_inception`,
    keys 'pool3', 'logits'). Without a mesh, batches run on the default device. With one,
    every process must pass batches of the same sizes in the same order (e.g. from
    `source_pixel_batches`); a batch that does not split evenly over this process's devices
    is padded with zeros whose outputs are dropped.
    """
    moments, kept, dim = None, {key: [] for key in keep}, None
    axes = (batch_axis,) if isinstance(batch_axis, str) else tuple(batch_axis)
    sharding = NamedSharding(mesh, P(axes)) if mesh is not None else None
    axis_size = int(np.prod([mesh.shape[axis] for axis in axes])) if mesh is not None else 1
    if mesh is not None:
        params = jax.device_put(params, NamedSharding(mesh, P()))
    for local in batches:
        local = np.asarray(local, np.float32)
        if mesh is None:
            outputs = {key: np.asarray(value) for key, value in apply_fn(params, local).items()}
        else:
            from jax.experimental import multihost_utils

            rows = local.shape[0]
            local_devices = max(1, axis_size // jax.process_count())
            per_device = -(-rows // local_devices)
            padded = np.zeros((per_device * local_devices,) + local.shape[1:], local.dtype)
            padded[:rows] = local
            global_shape = (padded.shape[0] * jax.process_count(),) + local.shape[1:]
            pixels = jax.make_array_from_process_local_data(sharding, padded, global_shape)
            result = apply_fn(params, pixels)
            outputs = {key: np.asarray(value)[:rows] for key, value in
                       multihost_utils.global_array_to_host_local_array(result, mesh, P(axes)).items()}
        features = outputs[feature_key]
        moments = frechet.accumulate(moments if moments is not None else frechet.empty_moments(features.shape[1]),
                                     features)
        for key in keep:
            kept[key].append(outputs[key])
    if moments is None:
        raise ValueError("stream_features got no batches")
    kept = {key: np.concatenate(values) for key, values in kept.items()}
    if gather and jax.process_count() > 1:
        from jax.experimental import multihost_utils

        kept = {key: np.asarray(multihost_utils.process_allgather(value, tiled=True)) for key, value in kept.items()}
    return frechet.merge_process_moments(moments), kept


def source_pixel_batches(source, batch_size: int, process_index: int = 0, process_count: int = 1,
                         image_key: str = "image", limit: int | None = None,
                         resolution: int = 0) -> Iterable[np.ndarray]:
    """This process's share of an ImageSource (genjax.data.images.sources) as RGB pixel
    batches [<= batch_size, H, W, 3] on 0..255, in record order: the first `limit` records
    (all if None) cut into process_count contiguous shares of floor(n / process_count), so
    every process yields the same batch sizes (the last n mod process_count are left out).
    resolution > 0: each image centre-cropped and resized to it, as the training stream does
    (config.data.resolution), so reference images are what the model was trained on."""
    from genjax.data.images.transforms import center_crop_resize

    total = source.num_examples if limit is None else min(limit, source.num_examples)
    share = total // process_count
    start = process_index * share
    for offset in range(start, start + share, batch_size):
        index = range(offset, min(offset + batch_size, start + share))
        images = [np.asarray(source.records[i][image_key]) for i in index]
        if resolution:
            images = [center_crop_resize(image, resolution) for image in images]
        yield to_rgb(np.stack(images))
