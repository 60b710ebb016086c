"""Image data: the digits and image-folder tfds builders, tfds mock data for cifar10/mnist,
and ImageStream's contract (batch dict, per-process shares, exact resume, epoch reshuffle,
flips), plus the one-line error for a dataset that is not prepared."""
import json
import shutil
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from genjax import factory
from genjax.data.images import datasets, digits_builder, transforms
from genjax.data.images.sources import open_digits, open_folder, open_tfds
from genjax.data.images.stream import ImageStream


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    open_digits("train", data_dir)
    return data_dir


@pytest.fixture(scope="module")
def digits(digits_dir):
    return open_digits("train", digits_dir).in_memory(("image", "label"))


def data_config(**fields):
    config = ml_collections.ConfigDict()
    config.seed = 3
    config.data = ml_collections.ConfigDict(datasets.default_data_fields())
    config.training = ml_collections.ConfigDict({"batch_size": 64})
    for path, value in fields.items():
        section, name = path.split("__")
        config[section][name] = value
    return config


def content(records) -> list[bytes]:
    """Each record as image bytes + label, sorted (a multiset of the examples)."""
    return sorted(np.asarray(r["image"]).tobytes() + bytes([int(r["label"])]) for r in records)


# --- digits builder ----------------------------------------------------------------------------

def test_digits_splits_hold_the_rescaled_sklearn_digits(digits_dir):
    images, labels = digits_builder.digits_uint8()
    index = digits_builder.split_indices(len(images))
    assert len(index["train"]) == 1437 and len(index["test"]) == 360
    assert not set(index["train"]) & set(index["test"])
    assert sorted(np.concatenate([index["train"], index["test"]])) == list(range(1797))
    from sklearn.datasets import load_digits

    raw = load_digits()
    np.testing.assert_array_equal(images[..., 0], np.rint(raw.images * 255 / 16).astype(np.uint8))
    for split in ("train", "test"):
        source = open_digits(split, digits_dir)
        records = [source.records[i] for i in range(source.num_examples)]
        assert source.num_examples == len(index[split])
        assert source.image_shape == (8, 8, 1) and source.num_classes == 10
        assert all(r["image"].dtype == np.uint8 and r["image"].shape == (8, 8, 1) for r in records)
        assert {int(r["label"]) for r in records} == set(range(10))
        expected = [{"image": images[i], "label": labels[i]} for i in index[split]]
        assert content(records) == content(expected)


def test_digits_preparation_is_deterministic(digits_dir, tmp_path):
    first, second = open_digits("test", digits_dir), open_digits("test", str(tmp_path))
    for i in range(first.num_examples):
        np.testing.assert_array_equal(first.records[i]["image"], second.records[i]["image"])
        assert first.records[i]["label"] == second.records[i]["label"]


# --- the stream ---------------------------------------------------------------------------------

def test_batch_is_the_contract_dict_scaled_to_plus_minus_one(digits):
    stream = ImageStream(digits, 64, seed=0)
    batch = stream.local_batch(5)
    assert set(batch) == {"x", "label"}
    assert batch["x"].shape == (64, 8, 8, 1) and batch["x"].dtype == np.float32
    assert batch["label"].shape == (64,) and batch["label"].dtype == np.int32
    indices = stream.global_indices(5)
    images = np.stack([digits.records[i]["image"] for i in indices]).astype(np.float32)
    np.testing.assert_array_equal(batch["x"], images / 127.5 - 1)
    np.testing.assert_array_equal(batch["label"], [digits.records[i]["label"] for i in indices])
    assert batch["x"].min() >= -1 and batch["x"].max() <= 1


@pytest.mark.parametrize("random_flip", [False, True])
def test_two_processes_read_disjoint_shares_that_make_the_global_batch(digits, random_flip):
    whole = ImageStream(digits, 64, seed=1, random_flip=random_flip)
    shares = [ImageStream(digits, 64, seed=1, process_index=p, process_count=2, random_flip=random_flip)
              for p in range(2)]
    for step in (0, 7, 22, 23):  # 22 steps per epoch: 23 is in the second epoch
        indices = whole.global_indices(step)
        local = [share.local_batch(step) for share in shares]
        first, second = indices[:32], indices[32:]
        assert not set(first) & set(second)
        for name in ("x", "label"):
            np.testing.assert_array_equal(np.concatenate([b[name] for b in local]), whole.local_batch(step)[name])
        np.testing.assert_array_equal(local[0]["label"], [digits.records[i]["label"] for i in first])
        np.testing.assert_array_equal(local[1]["label"], [digits.records[i]["label"] for i in second])


def test_each_epoch_is_a_new_permutation(digits):
    stream = ImageStream(digits, 64, seed=2)
    steps = stream.steps_per_epoch
    assert steps == 1437 // 64
    epochs = [np.concatenate([stream.global_indices(e * steps + s) for s in range(steps)]) for e in range(3)]
    for order in epochs:
        assert len(set(order)) == steps * 64  # no example twice within an epoch
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    other_seed = ImageStream(digits, 64, seed=3)
    assert not np.array_equal(other_seed.global_indices(0), stream.global_indices(0))


def test_resumed_stream_continues_the_straight_run_exactly(digits):
    def make():
        return ImageStream(digits, 64, seed=4, random_flip=True)

    straight = make().batches(0)
    straight_batches = [next(straight) for _ in range(30)]
    resume_at = 25  # past the first epoch boundary (22 steps per epoch)
    meta = json.loads(json.dumps(make().state(resume_at)))
    resumed = make().batches(meta["next_step"])
    for step in range(resume_at, 30):
        batch = next(resumed)
        for name in ("x", "label"):
            np.testing.assert_array_equal(batch[name], straight_batches[step][name])
        np.testing.assert_array_equal(batch["x"], make().local_batch(step)["x"])
    assert meta == {"next_step": 25, "seed": 4, "dataset": "sklearn_digits/1.0.0:train", "num_examples": 1437,
                    "global_batch_size": 64, "random_flip": True, "resolution": 0}


def test_flips_mirror_the_examples_the_mask_picks(digits):
    plain = ImageStream(digits, 64, seed=5).local_batch(3)["x"]
    flipped = ImageStream(digits, 64, seed=5, random_flip=True).local_batch(3)["x"]
    mask = transforms.flip_mask(5, 3, 64)
    assert 16 < mask.sum() < 48
    np.testing.assert_array_equal(flipped[mask], plain[mask][:, :, ::-1])
    np.testing.assert_array_equal(flipped[~mask], plain[~mask])
    assert not np.array_equal(transforms.flip_mask(5, 3, 64), transforms.flip_mask(5, 4, 64))


def test_factory_builds_the_digits_stream_from_config(digits_dir):
    config = data_config(data__name="digits", data__data_dir=digits_dir, data__in_memory=True, data__split="test")
    dataset = factory.build_dataset(config)
    source = dataset.source(config.data)
    stream = dataset.stream(config, process_index=1, process_count=2, source=source)
    assert dataset.data_shape(config.data, source) == (8, 8, 1)
    assert stream.source.num_examples == 360 and stream.local_batch_size == 32
    assert stream.local_batch(0)["x"].shape == (32, 8, 8, 1)
    with pytest.raises(factory.ConfigError, match=r"^training.batch_size=512: global batch size 512 exceeds the 360"):
        dataset.stream(data_config(data__name="digits", data__data_dir=digits_dir, data__split="test",
                                   training__batch_size=512))


# --- tfds datasets: mock data and missing data ------------------------------------------------------

@pytest.mark.parametrize("name, shape", [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1))])
def test_mock_tfds_datasets_stream_with_their_shapes(name, shape):
    config = data_config(data__name="tfds", data__tfds_name=name, data__random_flip=True, training__batch_size=8)
    with tfds.testing.mock_data(num_examples=20):
        dataset = factory.build_dataset(config)
        source = dataset.source(config.data)
        batch = dataset.stream(config, source=source).local_batch(3)
    assert source.image_shape == shape and source.num_classes == 10 and source.num_examples == 20
    assert batch["x"].shape == (8, *shape) and batch["x"].dtype == np.float32
    assert -1 <= batch["x"].min() and batch["x"].max() <= 1 and batch["x"].std() > 0.1
    assert batch["label"].dtype == np.int32 and set(batch["label"]) <= set(range(10))


def test_missing_dataset_names_the_command_that_prepares_it(tmp_path):
    with pytest.raises(factory.ConfigError) as error:
        open_tfds("cifar10", "train", str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("data.tfds_name='cifar10' is not prepared")
    assert f"tfds build cifar10 --file_format=array_record --data_dir={tmp_path}" in message
    with pytest.raises(factory.ConfigError, match=r"^data.tfds_name='cifr10' is not a tfds dataset; Did you mean"):
        open_tfds("cifr10", "train", str(tmp_path))


def test_dataset_prepared_as_tfrecord_is_named_as_such(digits_dir, tmp_path):
    shutil.copytree(f"{digits_dir}/sklearn_digits", tmp_path / "sklearn_digits")
    info = tmp_path / "sklearn_digits" / "1.0.0" / "dataset_info.json"
    info.write_text(info.read_text().replace('"fileFormat": "array_record"', '"fileFormat": "tfrecord"'))
    with pytest.raises(factory.ConfigError, match=r"^data.tfds_name='sklearn_digits' is prepared in .* as tfrecord, "
                                                  r"which has no random access; .*--file_format=array_record"):
        open_tfds("sklearn_digits", "train", str(tmp_path))
    assert open_tfds("sklearn_digits", "train", digits_dir).num_examples == 1437  # read back as array_record


def test_unknown_split_and_feature_are_config_errors(digits_dir):
    with pytest.raises(factory.ConfigError, match=r"^data.split='validation' is not a split of sklearn_digits; valid: test, train"):
        open_digits("validation", digits_dir)
    with pytest.raises(factory.ConfigError, match=r"^data.label_key='attributes' is not a feature of sklearn_digits"):
        open_digits("train", digits_dir, label_key="attributes")


# --- a folder of images -------------------------------------------------------------------------

def write_pngs(root, sizes, mode="RGB"):
    """root/<class>/<i>.png with seeded random pixels; returns {relative path: array}."""
    rng = np.random.default_rng(0)
    written = {}
    for label, size_list in sizes.items():
        (root / label).mkdir(parents=True)
        for i, (height, width) in enumerate(size_list):
            shape = (height, width, 3) if mode == "RGB" else (height, width)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(root / label / f"{i}.png")
            written[f"{label}/{i}.png"] = pixels
    return written


def test_image_folder_prepares_the_written_pngs(tmp_path):
    written = write_pngs(tmp_path / "pets", {"dog": [(6, 5)] * 3, "cat": [(6, 5)] * 2})
    source = open_folder(str(tmp_path / "pets"), "train", str(tmp_path / "tfds"))
    assert source.num_examples == 5 and source.image_shape == (6, 5, 3) and source.num_classes == 2
    names = ["cat", "dog"]  # labels are the sorted class names
    for i in range(5):
        record = source.records[i]
        path = record["file_name"].decode()
        np.testing.assert_array_equal(record["image"], written[path])
        assert names[record["label"]] == path.split("/")[0]
    config = data_config(data__name="image_folder", data__folder=str(tmp_path / "pets"),
                         data__data_dir=str(tmp_path / "tfds"), training__batch_size=4)
    batch = factory.build_dataset(config).stream(config).local_batch(0)
    assert batch["x"].shape == (4, 6, 5, 3) and batch["label"].dtype == np.int32
    assert "tensorflow" not in sys.modules


def test_image_folder_of_mixed_sizes_needs_a_resolution(tmp_path):
    write_pngs(tmp_path / "faces", {"a": [(9, 7), (5, 8)], "b": [(6, 6)]}, mode="L")
    config = data_config(data__name="image_folder", data__folder=str(tmp_path / "faces"), data__channels=1,
                         data__data_dir=str(tmp_path / "tfds"), training__batch_size=3)
    dataset = factory.build_dataset(config)
    with pytest.raises(factory.ConfigError, match="has images of different sizes; set data.resolution"):
        dataset.source(config.data)
    config.data.resolution = 4
    source = dataset.source(config.data)
    assert dataset.data_shape(config.data, source) == (4, 4, 1)
    assert dataset.stream(config, source=source).local_batch(0)["x"].shape == (3, 4, 4, 1)


def test_image_folder_without_class_subdirectories_is_a_config_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(factory.ConfigError, match=r"^data.folder=.*has no images in class subdirectories"):
        open_folder(str(tmp_path / "empty"), "train", str(tmp_path / "tfds"))


@pytest.mark.slow
def test_worker_processes_read_the_same_batches(digits_dir):
    if not flags.FLAGS.is_parsed():  # grain reads its absl flags (experiments run under app.run)
        flags.FLAGS.mark_as_parsed()
    stream = ImageStream(open_digits("train", digits_dir), 64, seed=6, random_flip=True)
    iterator = stream.batches(20, num_workers=2)
    try:
        for step in range(20, 26):
            batch = next(iterator)
            for name in ("x", "label"):
                np.testing.assert_array_equal(batch[name], stream.local_batch(step)[name])
    finally:
        iterator.close()
