"""Sample grids: pixels are the exact inverse of the data pipeline's scaling, tiles sit where
the row-major layout puts them, and the PNG decodes to the same pixels."""
import io

import numpy as np
import pytest
from PIL import Image

from genjax.data.images.transforms import scaled
from genjax.evaluate.image_grid import png_bytes, save_image_grid, tile, to_uint8


def test_pixels_invert_the_pipeline_scaling_exactly():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    np.testing.assert_array_equal(to_uint8(scaled(pixels)), pixels)
    np.testing.assert_array_equal(to_uint8(scaled(pixels, (0.0, 1.0)), (0.0, 1.0)), pixels)
    np.testing.assert_array_equal(scaled(pixels), pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
    assert scaled(pixels, (0.0, 1.0)).min() == 0.0 and scaled(pixels, (0.0, 1.0)).max() == 1.0
    assert to_uint8(np.array([[[[-3.0, np.nan, 2.0]]]])).tolist() == [[[[0, 0, 255]]]]


def test_tiles_are_laid_out_row_major_with_borders():
    images = np.stack([np.full((2, 3, 1), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = tile(images, columns=3)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
    # Image 4 (0-based) is row 1, column 1: top-left pixel at (1 + 3, 1 + 4).
    assert grid[4, 5, 0] == 50 and grid[4:6, 5:8, 0].tolist() == [[50] * 3] * 2
    assert grid[0].max() == 0 and grid[4, 4, 0] == 0  # borders stay black
    assert grid[4:6, 9:12].max() == 0  # the missing sixth tile is empty
    with pytest.raises(ValueError, match=r"\[n, H, W, C\]"):
        tile(images[0])


def test_png_decodes_to_the_grid_and_is_written(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(6, 4, 4, 3))
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(images, scale=2))))
    expected = tile(to_uint8(images)).repeat(2, axis=0).repeat(2, axis=1)
    np.testing.assert_array_equal(decoded, expected)
    save_image_grid(tmp_path / "grid.png", images[..., :1])
    assert np.asarray(Image.open(tmp_path / "grid.png")).ndim == 2  # one channel: a grey PNG
