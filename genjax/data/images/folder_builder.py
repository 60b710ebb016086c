"""tfds builder for a user's own directory of images, one subdirectory per class.

Layouts (the second is tfds's ImageFolder layout, which needs TensorFlow to read; this
builder prepares the same folders to array_record instead, so tfds.data_source reads them):

    root/<class>/<image>            -> one split, "train"
    root/<split>/<class>/<image>    -> one split per top-level directory

Labels are the class directory names in sorted order (the union over splits), so label i
is `info.features["label"].names[i]`. Images (any format Pillow opens) are converted to
RGB (channels=3) or grey (channels=1) and stored as PNG at their own size. The image
feature's shape is (H, W, C) when all share one size, else (None, None, C): a stream then
needs a `resolution` to crop and resize them to.

The prepared copy lives in data_dir/image_folder/<folder name>-<hash>/1.0.0, the hash taken
over the file listing (names, sizes, modification times) and the channel count: a changed
folder is prepared again instead of being read stale.
"""
from __future__ import annotations

import hashlib
import io
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from genjax.data.images.local_builder import LocalBuilder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MODES = {1: "L", 3: "RGB"}


def _subdirectories(path: str) -> list[str]:
    return sorted(name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name)))


def _images(path: str) -> list[str]:
    return sorted(name for name in os.listdir(path)
                  if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name)))


def scan_folder(root_dir: str) -> dict[str, list[tuple[str, str]]]:
    """{split: [(image path, class name), ...]} for either layout; ValueError if `root_dir`
    holds no images in class subdirectories."""
    if not os.path.isdir(root_dir):
        raise ValueError(f"image folder {root_dir!r} does not exist")
    top = _subdirectories(root_dir)
    class_layout = any(_images(os.path.join(root_dir, name)) for name in top)
    groups = {"train": root_dir} if class_layout else {name: os.path.join(root_dir, name) for name in top}
    splits = {}
    for split, split_dir in groups.items():
        files = [(os.path.join(split_dir, label, name), label)
                 for label in _subdirectories(split_dir) for name in _images(os.path.join(split_dir, label))]
        if files:
            splits[split] = files
    if not splits:
        raise ValueError(
            f"image folder {root_dir!r} has no images in class subdirectories; expected "
            f"{root_dir}/<class>/<image> or {root_dir}/<split>/<class>/<image>"
        )
    return splits


def folder_fingerprint(splits: dict[str, list[tuple[str, str]]], channels: int) -> str:
    digest = hashlib.sha256(f"channels={channels}".encode())
    for split, files in sorted(splits.items()):
        for path, label in files:
            stat = os.stat(path)
            digest.update(f"{split}|{label}|{os.path.basename(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def common_size(splits: dict[str, list[tuple[str, str]]]) -> tuple:
    """(H, W) shared by every image (read from the headers), or (None, None)."""
    sizes = set()
    for files in splits.values():
        for path, _ in files:
            with Image.open(path) as image:
                sizes.add(image.size)
            if len(sizes) > 1:
                return (None, None)
    (width, height), = sizes
    return (height, width)


def encode_png(path: str, channels: int) -> bytes:
    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.convert(MODES[channels]).save(buffer, format="PNG")
    return buffer.getvalue()


class ImageFolder(LocalBuilder, skip_registration=True):
    """A directory of class subdirectories of images as a tfds dataset (see the module docstring)."""

    name = "image_folder"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, root_dir: str, *, channels: int = 3, **kwargs):
        if channels not in MODES:
            raise ValueError(f"channels={channels!r} must be 1 (grey) or 3 (RGB)")
        self._root_dir = os.path.abspath(os.path.expanduser(root_dir))
        self._channels = channels
        self._splits = scan_folder(self._root_dir)
        self._size = common_size(self._splits)
        self._labels = sorted({label for files in self._splits.values() for _, label in files})
        folder_name = re.sub(r"[^a-z0-9_]+", "_", os.path.basename(self._root_dir).lower()).strip("_") or "folder"
        config = tfds.core.BuilderConfig(name=f"{folder_name}-{folder_fingerprint(self._splits, channels)}")
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Images of {self._root_dir}, one class per subdirectory.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(*self._size, self._channels), dtype=np.uint8,
                                             encoding_format="png"),
                "label": tfds.features.ClassLabel(names=self._labels),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(files) for split, files in self._splits.items()}

    def _generate_examples(self, files):
        for path, label in files:
            relative = os.path.relpath(path, self._root_dir)
            yield relative, {"image": encode_png(path, self._channels), "label": label, "file_name": relative}
