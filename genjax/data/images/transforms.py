"""Per-batch image preprocessing: crop and resize, scale to the data range, random flips.

- Scaling: x = lo + u (hi - lo) / 255 for uint8 u, so 0 -> lo and 255 -> hi. The default
  range [-1, 1] (x = u / 127.5 - 1) is score_sde's data.centered=True and EDM's convention;
  [0, 1] is score_sde's data.centered=False (its VE / NCSN++ configs).
- Resizing (optional): centre crop to the largest square, then resize to
  resolution x resolution with Lanczos filtering (EDM's dataset_tool --transform=center-crop).
- Flips (optional): example j of global batch `step` is mirrored left-right iff
  u_j < 1/2, u = uniform draws from the generator seeded by (seed, FLIP_STREAM, step) over
  the whole global batch (score_sde's random_flip). So a flip depends on (seed, step,
  example) only, not on the number of processes that share the batch.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

FLIP_STREAM = 0x466C6970  # separates the flip draws from other uses of the run's seed


DEFAULT_RANGE = (-1.0, 1.0)


def scaled(images: np.ndarray, value_range: tuple[float, float] = DEFAULT_RANGE) -> np.ndarray:
    """uint8 [..., H, W, C] -> float32 in [lo, hi] (for [-1, 1] exactly u / 127.5 - 1)."""
    lo, hi = (float(v) for v in value_range)
    return images.astype(np.float32) / np.float32(255.0 / (hi - lo)) + np.float32(lo)


def check_value_range(value_range) -> tuple[float, float]:
    """(lo, hi) as floats; ValueError unless it is two finite numbers with lo < hi."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range={value_range!r} must be two numbers (lo, hi), e.g. (-1.0, 1.0)") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range={tuple(value_range)!r} must be finite with lo < hi, e.g. (-1.0, 1.0)")
    return lo, hi


def center_crop_resize(image: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [resolution, resolution, C] (centre square crop, Lanczos)."""
    height, width = image.shape[:2]
    if (height, width) == (resolution, resolution):
        return image
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    grey = square.shape[-1] == 1
    pil = Image.fromarray(square[..., 0] if grey else square).resize((resolution, resolution), Image.LANCZOS)
    resized = np.asarray(pil)
    return resized[..., None] if grey else resized


def flip_mask(seed: int, step: int, global_batch_size: int) -> np.ndarray:
    """bool [global_batch_size]: which examples of global batch `step` are mirrored."""
    return np.random.default_rng([FLIP_STREAM, seed, step]).random(global_batch_size) < 0.5


def flip_left_right(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """images [b, H, W, C] with the rows where `mask` holds mirrored along W."""
    return np.where(mask[:, None, None, None], images[:, :, ::-1], images)
