"""The image entries of the factory's DATASETS table and the config.data fields they read.

An `ImageDataset` turns a config into an `ImageStream`:

    source = DATASETS[config.data.name].source(config.data)          # ConfigError if missing
    stream = DATASETS[config.data.name].stream(config, jax.process_index(), jax.process_count())

config.data fields (defaults in `default_data_fields`):
  name         digits | tfds | image_folder
  tfds_name    (tfds) the dataset: "mnist", "cifar10", "celeb_a", "imagenet_resized/32x32", ...
  folder       (image_folder) root of <class>/<image> or <split>/<class>/<image>
  split        the tfds split read for training ("train"; tfds slicing such as "train[:90%]" works)
  data_dir     where prepared datasets live ("": $TFDS_DATA_DIR, else ~/tensorflow_datasets)
  image_key, label_key   feature names (label_key "": unlabelled, no "label" in the batch)
  channels     (image_folder) 3 (RGB) or 1 (grey)
  resolution   0: images as stored; n: centre crop and resize to n x n
  random_flip  mirror each example left-right with probability 1/2 (score_sde's random_flip)
  in_memory    decode the split once and keep it in memory (small datasets: digits, mnist, cifar10)

tensorflow-datasets and grain are imported when a dataset is opened, not with this module.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from genjax.data.images.sources import ImageSource
    from genjax.data.images.stream import ImageStream


def default_data_fields() -> dict[str, Any]:
    """The image fields of config.data with their defaults (for configs/base.py)."""
    return {
        "tfds_name": "",
        "folder": "",
        "split": "train",
        "data_dir": "",
        "image_key": "image",
        "label_key": "label",
        "channels": 3,
        "resolution": 0,
        "random_flip": False,
        "in_memory": False,
        "value_range": (-1.0, 1.0),  # pixels 0..255 map linearly onto [lo, hi] (score_sde's VE configs: (0, 1))
    }


def _open_digits(data) -> ImageSource:
    from genjax.data.images.sources import open_digits

    return open_digits(data.split, data.data_dir, image_key=data.image_key, label_key=data.label_key)


def _open_tfds(data) -> ImageSource:
    from genjax.data.images.sources import open_tfds

    if not data.tfds_name:
        raise _config_error("data.name='tfds' needs data.tfds_name (e.g. 'cifar10', 'imagenet_resized/32x32')")
    return open_tfds(data.tfds_name, data.split, data.data_dir, image_key=data.image_key, label_key=data.label_key)


def _open_folder(data) -> ImageSource:
    from genjax.data.images.sources import open_folder

    if not data.folder:
        raise _config_error("data.name='image_folder' needs data.folder (a directory of <class>/<image> files)")
    return open_folder(data.folder, data.split, data.data_dir, channels=data.channels, image_key=data.image_key,
                       label_key=data.label_key)


def value_range(data) -> tuple[float, float]:
    """config.data.value_range as (lo, hi); ConfigError unless lo < hi, both finite."""
    from genjax.data.images.transforms import check_value_range

    try:
        return check_value_range(data.value_range)
    except ValueError as error:
        raise _config_error(f"data.{error}") from None


def _config_error(message: str) -> Exception:
    from genjax.factory import ConfigError  # genjax.factory imports this module

    return ConfigError(message)


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """A DATASETS entry for images; `open_source(config.data)` opens the configured split."""

    open_source: Callable[[Any], ImageSource]

    def source(self, data) -> ImageSource:
        """The configured split (decoded into memory if data.in_memory); ConfigError if it
        cannot be opened."""
        source = self.open_source(data)
        if data.resolution < 0:
            raise _config_error(f"data.resolution={data.resolution!r} must be 0 (as stored) or a positive size")
        if not data.resolution and None in source.image_shape[:2]:
            raise _config_error(f"{source.identity} has images of different sizes; set data.resolution to crop and "
                                f"resize them to one size")
        return source.in_memory((data.image_key, data.label_key)) if data.in_memory else source

    def data_shape(self, data, source: ImageSource) -> tuple[int, int, int]:
        """(H, W, C) of the images a stream of `source` yields under config.data."""
        height, width, channels = source.image_shape
        return (data.resolution, data.resolution, channels) if data.resolution else (height, width, channels)

    def stream(self, config, process_index: int = 0, process_count: int = 1,
               source: ImageSource | None = None) -> ImageStream:
        """The training stream: config.data's source, batch config.training.batch_size,
        order and flips from config.seed, this process's share."""
        from genjax.data.images.stream import ImageStream

        data = config.data
        try:
            return ImageStream(
                source if source is not None else self.source(data), config.training.batch_size, config.seed,
                process_index=process_index, process_count=process_count, random_flip=bool(data.random_flip),
                resolution=int(data.resolution), image_key=data.image_key, label_key=data.label_key,
                value_range=value_range(data),
            )
        except ValueError as error:
            raise _config_error(f"training.batch_size={config.training.batch_size}: {error}") from None


DIGITS = ImageDataset(_open_digits)
TFDS = ImageDataset(_open_tfds)
IMAGE_FOLDER = ImageDataset(_open_folder)
