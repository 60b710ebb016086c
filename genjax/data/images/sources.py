"""Random-access image sources: a prepared tfds dataset opened with tfds.data_source.

`ImageSource.records[i]` is example i of one split as a dict of numpy values (the image
uint8 [H, W, C], decoded from its PNG/JPEG bytes by tfds without TensorFlow). Three ways
to get one:

- `open_tfds(name, split, data_dir)`: any tfds dataset already prepared as array_record
  (mnist, cifar10, celeb_a, imagenet_resized/32x32, ...). A dataset that is not there raises
  one ConfigError line with the `tfds build` command that prepares it.
- `open_digits(split, data_dir)`: scikit-learn's 8x8 digits, prepared on first use.
- `open_folder(folder, split, data_dir, channels)`: a directory of class subdirectories of
  images, prepared on first use (and again when its files change).

Preparing writes to a temporary directory that tfds renames when complete, so an
interrupted preparation leaves nothing that reads as prepared. On several hosts sharing a
file system, prepare once before the run starts (each host would otherwise prepare its own
copy at the same time).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import tensorflow_datasets as tfds


def _config_error(message: str) -> Exception:
    # Imported here: genjax.factory imports this package to fill its DATASETS table.
    from genjax.factory import ConfigError

    return ConfigError(message)


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """One split of a prepared dataset: random-access records and what a stream needs to
    know about them. `identity` names the dataset, version and split (checked on resume)."""

    records: Sequence[dict[str, Any]] = dataclasses.field(repr=False)  # (grain logs reprs)
    identity: str
    image_shape: tuple  # (H, W, C); H and W are None when images differ in size
    num_classes: int | None  # None when the label feature is not a class label
    feature_names: tuple[str, ...]

    @property
    def num_examples(self) -> int:
        return len(self.records)

    def in_memory(self, keys: Sequence[str]) -> "ImageSource":
        """This source with every record decoded once and kept in memory (only `keys`):
        reading a batch is then a lookup instead of a PNG decode per example (for splits
        that fit in memory: the 8x8 digits, mnist, cifar10)."""
        keys = tuple(key for key in keys if key)
        records = [{key: record[key] for key in keys} for record in (self.records[i] for i in range(self.num_examples))]
        return dataclasses.replace(self, records=records)


def resolved_data_dir(data_dir: str) -> str:
    """`data_dir`, or tfds's default ($TFDS_DATA_DIR, else ~/tensorflow_datasets) when empty."""
    return os.path.expanduser(data_dir) if data_dir else os.path.expanduser(tfds.core.constants.get_default_data_dir())


def _image_source(records, info, split: str, image_key: str, label_key: str) -> ImageSource:
    features = info.features
    names = tuple(features.keys())
    for field, key in (("data.image_key", image_key), ("data.label_key", label_key)):
        if key and key not in names:
            hint = "; set data.label_key='' for an unlabelled dataset" if field == "data.label_key" else ""
            raise _config_error(f"{field}={key!r} is not a feature of {info.name} (features: {', '.join(names)}){hint}")
    label = features[label_key] if label_key else None
    num_classes = label.num_classes if isinstance(label, tfds.features.ClassLabel) else None
    identity = f"{info.full_name}:{split}"
    return ImageSource(records, identity, tuple(features[image_key].shape), num_classes, names)


def build_command(name: str, data_dir: str) -> str:
    return f"tfds build {name} --file_format=array_record --data_dir={data_dir}"


def open_tfds(name: str, split: str = "train", data_dir: str = "", *, image_key: str = "image",
              label_key: str = "label") -> ImageSource:
    """The tfds dataset `name` ("cifar10", "imagenet_resized/32x32", ...) prepared as
    array_record in `data_dir`; ConfigError (one line, with the command that prepares it) if
    it is unknown, missing, prepared in another format, or has no such split."""
    root = resolved_data_dir(data_dir)
    try:
        records = tfds.data_source(name, split=split, data_dir=root, download=False)
    except tfds.core.registered.DatasetNotFoundError as error:
        lines = [line for line in str(error).splitlines() if line.startswith("Did you mean")]
        raise _config_error(f"data.tfds_name={name!r} is not a tfds dataset{'; ' + lines[0] if lines else ''}") from None
    except (KeyError, NotImplementedError, FileNotFoundError):
        # Not prepared (tfds then reports an empty split list, or the tfrecord default) or
        # prepared as tfrecord: say which, and how to prepare it.
        raise _config_error(_not_prepared_message(name, root)) from None
    except ValueError as error:
        raise _config_error(f"data.split={split!r}: {' '.join(str(error).split())}") from None
    return _image_source(records, records.dataset_info, split, image_key, label_key)


def _not_prepared_message(name: str, root: str) -> str:
    builder = tfds.builder(name, data_dir=root)
    prepared_as = getattr(builder.info.file_format, "value", None) if builder.info.splits else None
    if prepared_as:
        return (f"data.tfds_name={name!r} is prepared in {builder.data_dir} as {prepared_as}, which has no random "
                f"access; prepare it as array_record into another data.data_dir: {build_command(name, '<dir>')}")
    return (f"data.tfds_name={name!r} is not prepared in data.data_dir={root!r}; prepare it with: "
            f"{build_command(name, root)} (building needs TensorFlow; reading does not)")


def _prepared_source(builder, split: str, image_key: str, label_key: str) -> ImageSource:
    if not builder.is_prepared():  # prepare once, quietly: tfds's progress bars would flood stderr
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
        try:
            builder.download_and_prepare(file_format="array_record")
        finally:
            tfds.enable_progress_bar()
    if split not in builder.info.splits:
        raise _config_error(f"data.split={split!r} is not a split of {builder.info.name}; "
                            f"valid: {', '.join(sorted(builder.info.splits))}")
    return _image_source(builder.as_data_source(split=split), builder.info, split, image_key, label_key)


def open_digits(split: str = "train", data_dir: str = "", *, image_key: str = "image",
                label_key: str = "label") -> ImageSource:
    """scikit-learn's 8x8 digits (see digits_builder), prepared into `data_dir` if absent."""
    from genjax.data.images.digits_builder import SklearnDigits

    builder = SklearnDigits(data_dir=resolved_data_dir(data_dir), file_format="array_record")
    return _prepared_source(builder, split, image_key, label_key)


def open_folder(folder: str, split: str = "train", data_dir: str = "", *, channels: int = 3,
                image_key: str = "image", label_key: str = "label") -> ImageSource:
    """The images of `folder` (see folder_builder), prepared into `data_dir` if absent."""
    from genjax.data.images.folder_builder import ImageFolder

    try:
        builder = ImageFolder(folder, channels=channels, data_dir=resolved_data_dir(data_dir),
                              file_format="array_record")
    except (ValueError, OSError) as error:
        message = " ".join(str(error).split())
        raise _config_error(f"data.{message}" if message.startswith("channels=") else
                            f"data.folder={folder!r}: {message}") from None
    return _prepared_source(builder, split, image_key, label_key)
