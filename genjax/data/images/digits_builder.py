"""tfds builder for the 8x8 handwritten digits that scikit-learn ships (no download).

`sklearn.datasets.load_digits`: 1,797 grey images of 8 x 8 pixels, values 0..16, 10 classes
(UCI Optical Recognition of Handwritten Digits; Alpaydin & Kaynak 1998).

- image: uint8 [8, 8, 1], value round(v * 255 / 16) (so 0 -> 0 and 16 -> 255), stored as PNG
  like mnist's and cifar10's images; label: ClassLabel, 10 classes.
- splits, fixed by the example's index i in load_digits' order (no randomness):
  test = {i : i % 5 == 0} (360 examples), train = the other 1,437.

The builder is not registered by name in tfds (no import side effect): construct it,
`download_and_prepare(file_format="array_record")`, and read with `as_data_source(split)`.
"""
from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from genjax.data.images.local_builder import LocalBuilder

TEST_EVERY = 5  # example i goes to test iff i % TEST_EVERY == 0


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [1797, 8, 8, 1] rescaled 0..16 -> 0..255, labels int64 [1797])."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64)


def split_indices(num_examples: int) -> dict[str, np.ndarray]:
    index = np.arange(num_examples)
    return {"train": index[index % TEST_EVERY != 0], "test": index[index % TEST_EVERY == 0]}


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 [H, W, 1 or 3] image (tfds's Image feature takes encoded
    bytes without TensorFlow)."""
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


class SklearnDigits(LocalBuilder, skip_registration=True):
    """scikit-learn's 8x8 digits as a tfds dataset (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="scikit-learn's 8x8 handwritten digits, 0..16 rescaled to uint8 0..255.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8, encoding_format="png"),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
        )

    def _split_generators(self, dl_manager):
        images, labels = digits_uint8()
        return {name: self._generate_examples(images, labels, index)
                for name, index in split_indices(len(images)).items()}

    def _generate_examples(self, images, labels, index):
        for i in index:
            yield int(i), {"image": png_bytes(images[i]), "label": int(labels[i])}
