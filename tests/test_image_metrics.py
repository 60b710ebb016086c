"""Image metrics: Frechet distance (FID's formula), KID, Inception Score, the FID Inception-v3
network (random weights here) with its weight file checks, and the digits classifier."""
import numpy as np
import pytest
import scipy.linalg

import jax

from genjax.evaluate import frechet, kid
from genjax.evaluate.inception_score import inception_score


def _random_covariance(rng, dim, rank=None):
    a = rng.normal(size=(dim, rank or dim))
    return a @ a.T / dim


# --- Frechet distance ------------------------------------------------------------------------------

def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_commuting_covariances_is_the_closed_form():
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T commute: tr (S1 S2)^{1/2} = sum sqrt(a b).
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    a, b = rng.uniform(0.1, 4, size=8), rng.uniform(0.1, 4, size=8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = np.sum((mu1 - mu2) ** 2) + a.sum() + b.sum() - 2 * np.sum(np.sqrt(a * b))
    value = frechet.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert value == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_rank_one_covariances_is_the_closed_form():
    # S1 = u u^T, S2 = v v^T (rank 1, not commuting): tr (S1 S2)^{1/2} = |u . v|.
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=10), rng.normal(size=10)
    mu = rng.normal(size=10)
    expected = mu @ mu + u @ u + v @ v - 2 * abs(u @ v)
    value = frechet.frechet_distance(mu, np.outer(u, u), np.zeros(10), np.outer(v, v))
    assert value == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_with_fewer_samples_than_dimensions_is_finite_and_matches_sqrtm():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 40)), rng.normal(size=(25, 40)) + 0.3
    mu1, s1 = frechet.gaussian_statistics(frechet.batch_moments(x))
    mu2, s2 = frechet.gaussian_statistics(frechet.batch_moments(y))
    assert np.linalg.matrix_rank(s1) == 19
    value = frechet.frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value)
    # pytorch-fid's formula: tr sqrtm(S1 S2), real part (imaginary round-off discarded).
    reference = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)
    assert value == pytest.approx(reference, rel=1e-6)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(300, 64)) * rng.uniform(0.1, 5, size=64) + 7.0
    mu, sigma = frechet.gaussian_statistics(frechet.batch_moments(features))
    assert frechet.frechet_distance(mu, sigma, mu, sigma) <= 1e-6 * np.trace(sigma)


def test_frechet_distance_of_shifted_set_is_the_squared_shift():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(200, 16))
    shift = rng.normal(size=16)
    assert frechet.frechet_distance_of_features(features, features + shift) == pytest.approx(shift @ shift, rel=1e-8)


def test_streaming_and_merged_moments_equal_one_shot_numpy():
    rng = np.random.default_rng(6)
    features = rng.normal(size=(1000, 12)) * 3 + 100.0  # a large mean tests the centred update
    streamed = frechet.moments_of_batches(np.array_split(features, 7), dim=12)
    halves = [frechet.moments_of_batches(part, 12) for part in (features[:313, None], features[313:, None])]
    merged = frechet.merge_all(halves)
    for moments in (streamed, merged):
        mu, sigma = frechet.gaussian_statistics(moments)
        assert moments.count == 1000
        np.testing.assert_allclose(mu, features.mean(0), rtol=1e-13)
        np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-10, atol=1e-12)


def test_statistics_round_trip_and_metadata_is_checked(tmp_path):
    path = str(tmp_path / "ref" / "stats.npz")
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    frechet.save_statistics(path, mu, sigma, 50000, {"features": "inception_v3_fid", "dataset": "cifar10"})
    mu2, sigma2, count, metadata = frechet.load_statistics(path, expect={"dataset": "cifar10"})
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    assert count == 50000 and metadata["features"] == "inception_v3_fid"
    with pytest.raises(ValueError, match="dataset='mnist'|expected 'mnist'"):
        frechet.load_statistics(path, expect={"dataset": "mnist"})
    with pytest.raises(FileNotFoundError):
        frechet.load_statistics(str(tmp_path / "missing.npz"))


def test_reference_statistics_are_computed_once_and_never_overwritten(tmp_path):
    path = str(tmp_path / "cifar10_train.npz")
    features = np.random.default_rng(14).normal(size=(50, 4))
    metadata = {"features": "inception-2015-12-05/pool3", "dataset": "cifar10", "split": "train", "size": (32, 32)}
    calls = []

    def compute():
        calls.append(1)
        return frechet.batch_moments(features)

    first = frechet.load_or_compute_statistics(path, compute, metadata)
    second = frechet.load_or_compute_statistics(path, compute, metadata)
    assert len(calls) == 1 and first[2] == second[2] == 50
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_allclose(second[1], np.cov(features, rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError, match="split"):
        frechet.load_or_compute_statistics(path, compute, dict(metadata, split="test"))
    assert len(calls) == 1 and frechet.load_statistics(path)[3]["split"] == "train"


# --- KID ---------------------------------------------------------------------------------------------

def test_kid_of_one_distribution_is_zero_within_its_standard_error():
    # 40 independent pairs of sets from one distribution: the mean of the estimates is within
    # 3 standard errors of 0 (a biased V-statistic is positive by about 2 E k(x,x) / m).
    rng = np.random.default_rng(7)
    estimates = []
    for i in range(40):
        x, y = rng.standard_t(5, size=(2, 60, 8))
        estimates.append(float(kid.unbiased_mmd2(x, y)))
    estimates = np.asarray(estimates)
    standard_error = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean()) < 3 * standard_error


def test_kid_of_different_distributions_is_clearly_positive():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(400, 16)), rng.normal(size=(400, 16)) * 1.3 + 0.2
    mean, std = kid.kernel_inception_distance(jax.random.key(0), x, y, subset_size=200, num_subsets=20)
    same, same_std = kid.kernel_inception_distance(jax.random.key(0), x, rng.normal(size=(400, 16)),
                                                   subset_size=200, num_subsets=20)
    assert mean > 5 * std > 0
    assert abs(same) < mean / 10


def test_kid_matches_a_direct_double_loop():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(2, 5, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3
    expected = (sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
                - 2 * sum(k(x[i], y[j]) for i in range(5) for j in range(5)) / 25)
    assert float(kid.unbiased_mmd2(x, y)) == pytest.approx(expected, rel=1e-5)


# --- Inception Score -----------------------------------------------------------------------------------

def test_inception_score_of_confident_uniform_predictions_is_the_class_count():
    num_classes = 7
    logits = 50.0 * np.eye(num_classes)[np.arange(10 * 70) % num_classes]
    mean, std = inception_score(logits, num_splits=10)
    assert mean == pytest.approx(num_classes, rel=1e-5) and std < 1e-4


def test_inception_score_of_identical_predictions_is_one():
    logits = np.tile(np.random.default_rng(10).normal(size=(1, 12)), (100, 1))
    mean, std = inception_score(logits, num_splits=10)
    assert mean == pytest.approx(1.0, abs=1e-5)


def test_inception_score_matches_numpy_per_split():
    logits = np.random.default_rng(11).normal(size=(40, 5)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for part in np.split(p, 4):
        marginal = part.mean(0)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(marginal)), 1))))
    mean, std = inception_score(logits, num_splits=4)
    assert mean == pytest.approx(np.mean(scores), rel=1e-5) and std == pytest.approx(np.std(scores), rel=1e-3)


# --- digits classifier -----------------------------------------------------------------------------

from genjax.evaluate import digits_classifier  # noqa: E402


@pytest.fixture(scope="module")
def digits_model():
    train, train_labels = digits_classifier.digits_split("train")
    test, test_labels = digits_classifier.digits_split("test")
    params = digits_classifier.train_classifier(jax.random.key(0), train, train_labels, steps=300)
    return params, (train, train_labels), (test, test_labels)


def test_digits_classifier_is_accurate_on_the_held_out_split(digits_model):
    params, _, (test, test_labels) = digits_model
    assert len(test) == 360
    assert digits_classifier.class_accuracy(params, test, test_labels) > 0.95
    quality = digits_classifier.sample_quality(params, test, test_labels, reference_pixels=test)
    assert quality["digits_frechet"] < 1e-6 and quality["digits_class_accuracy"] > 0.95


def test_class_accuracy_with_permuted_labels_is_chance(digits_model):
    params, _, (test, test_labels) = digits_model
    permuted = np.random.default_rng(0).permutation(test_labels)
    assert digits_classifier.class_accuracy(params, test, permuted) < 0.2


def test_digits_frechet_distance_separates_real_digits_from_noise_and_shuffled_pixels(digits_model):
    params, (train, _), (test, _) = digits_model
    rng = np.random.default_rng(1)
    shuffled = np.stack([rng.permutation(image.ravel()).reshape(image.shape) for image in test])
    noise = rng.integers(0, 256, size=test.shape).astype(np.uint8)
    real = digits_classifier.frechet_digits_distance(params, train, test)
    assert digits_classifier.features(params, test).shape == (360, digits_classifier.FEATURE_DIM)
    assert real < 0.1 * digits_classifier.frechet_digits_distance(params, shuffled, test)
    assert real < 0.1 * digits_classifier.frechet_digits_distance(params, noise, test)


def test_digits_frechet_distance_grows_with_the_noise_added_to_real_digits(digits_model):
    params, (train, _), (test, _) = digits_model
    rng = np.random.default_rng(2)
    distances = [digits_classifier.frechet_digits_distance(
        params, np.clip(train + rng.normal(scale=scale, size=train.shape), 0, 255), test)
        for scale in (0.0, 20.0, 60.0, 120.0)]
    assert np.all(np.diff(distances) > 0), distances


def test_cached_classifier_is_the_seeded_training_and_is_not_retrained(tmp_path, monkeypatch, digits_model):
    path = str(tmp_path / "digits_classifier.npz")
    trained = digits_classifier.load_or_train(path, seed=0, steps=300)
    again = digits_model[0]  # train_classifier(key(0), the train split, steps=300)
    monkeypatch.setattr(digits_classifier, "train_classifier", lambda *a, **k: pytest.fail("retrained"))
    loaded = digits_classifier.load_or_train(path, seed=0, steps=300)
    for a, b, c in zip(jax.tree.leaves(trained), jax.tree.leaves(again), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


# --- Inception-v3 (random weights; the real ones cannot be downloaded here) ---------------------

from experiments import convert_inception_weights  # noqa: E402
from genjax.evaluate import inception  # noqa: E402

_BN_TORCH = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _fake_pytorch_fid_state_dict(rng):
    """Random arrays under pytorch-fid's tensor names and torch layouts."""
    state = {}
    for key, shape in inception.expected_shapes().items():
        *module, layer, name = key.split("/")
        if layer == "conv":
            state[".".join(module + ["conv.weight"])] = rng.normal(size=(shape[3], shape[2], shape[0], shape[1]))
        elif layer == "bn":
            state[".".join(module + ["bn", _BN_TORCH[name]])] = rng.uniform(0.5, 1.5, size=shape)
            state[".".join(module + ["bn.num_batches_tracked"])] = np.asarray(0)
        else:
            state["fc." + ("weight" if name == "kernel" else "bias")] = rng.normal(size=shape[::-1])
    return state


@pytest.fixture(scope="module")
def fake_state_dict():
    """One fake pytorch-fid state dict (24M random numbers) for the converter and weight-file tests."""
    return _fake_pytorch_fid_state_dict(np.random.default_rng(3))


def test_inception_has_the_fid_networks_tensors():
    shapes = inception.expected_shapes()
    batch_norm_channels = sum(s[0] for k, s in shapes.items() if k.endswith("bn/mean"))
    trainable = sum(int(np.prod(s)) for s in shapes.values()) - 2 * batch_norm_channels
    # torchvision's Inception-v3 without the auxiliary head: 23,834,568 parameters with 1000
    # classes; the FID graph has 1008 (8 more rows of 2048 weights and a bias each).
    assert trainable == 23_834_568 + 8 * 2049
    assert shapes["Mixed_7c/branch_pool/conv/kernel"] == (1, 1, 2048, 192)
    assert shapes["Mixed_6b/branch7x7_2/conv/kernel"] == (1, 7, 128, 128)
    assert shapes["fc/kernel"] == (2048, 1008)


def test_inception_maps_32px_images_to_pool3_and_logits_independently_of_the_batch():
    params = inception.random_params(1)
    rng = np.random.default_rng(1)
    first, others = rng.uniform(0, 255, size=(1, 32, 32, 3)), rng.uniform(0, 255, size=(4, 32, 32, 3))
    a = inception.apply_inception(params, np.concatenate([first, others[:2]]))
    b = inception.apply_inception(params, np.concatenate([first, others[2:]]))
    assert a["pool3"].shape == (3, 2048) and a["logits"].shape == (3, 1008) and a["logits_unbiased"].shape == (3, 1008)
    assert np.all(np.isfinite(a["pool3"])) and np.all(np.asarray(a["pool3"]) >= 0)
    np.testing.assert_allclose(a["pool3"][0], b["pool3"][0], rtol=1e-5, atol=1e-7)
    assert not np.allclose(a["pool3"][1], b["pool3"][1], rtol=1e-3)
    unbiased = np.asarray(a["pool3"], np.float64) @ np.asarray(params["fc"]["kernel"], np.float64)
    np.testing.assert_allclose(a["logits_unbiased"], unbiased, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a["logits"], unbiased + np.asarray(params["fc"]["bias"]), rtol=1e-4, atol=1e-6)


def test_resize_is_torch_bilinear_without_align_corners():
    # torch.nn.functional.interpolate(mode="bilinear", align_corners=False), written out:
    # source coordinate (i + 0.5) * in / out - 0.5, clamped at 0, linear between neighbours.
    def axis_weights(n_in, n_out):
        w = np.zeros((n_out, n_in))
        for i in range(n_out):
            x = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            lo = min(int(np.floor(x)), n_in - 1)
            hi, frac = min(lo + 1, n_in - 1), x - lo
            w[i, lo] += 1 - frac
            w[i, hi] += frac
        return w

    for size_in, size_out in ((5, 13), (40, 13)):  # up (CIFAR -> 299) and down (no antialiasing)
        image = np.random.default_rng(2).uniform(0, 255, size=(1, size_in, size_in, 3))
        w = axis_weights(size_in, size_out)
        expected = np.einsum("ah,bw,nhwc->nabc", w, w, image) / 127.5 - 1
        np.testing.assert_allclose(inception.resize_and_scale(image, size_out), expected, rtol=1e-5, atol=1e-5)


def test_average_pools_inside_blocks_ignore_the_padding():
    # TF's average pool (FID's graph) averages only the pixels inside the image: ones stay ones.
    np.testing.assert_allclose(inception._avg_pool_same(np.ones((1, 4, 4, 2), np.float32)), 1.0)


def test_converter_maps_pytorch_fid_tensors_to_the_flax_layout(fake_state_dict):
    rng = np.random.default_rng(4)
    state = fake_state_dict
    arrays = convert_inception_weights.convert_state_dict(state)
    np.testing.assert_array_equal(arrays["Mixed_6b/branch7x7_2/conv/kernel"],
                                  state["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0).astype(np.float32))
    np.testing.assert_array_equal(arrays["Mixed_5b/branch_pool/bn/var"],
                                  state["Mixed_5b.branch_pool.bn.running_var"].astype(np.float32))
    np.testing.assert_array_equal(arrays["fc/kernel"], state["fc.weight"].T.astype(np.float32))
    # A converted conv kernel computes torch's convolution (NCHW input, OIHW weight).
    weight = state["Mixed_6b.branch7x7_2.conv.weight"][:4, :3].astype(np.float32)  # [4, 3, 1, 7]
    x = rng.normal(size=(1, 3, 5, 9)).astype(np.float32)
    torch_like = jax.lax.conv_general_dilated(x, weight, (1, 1), ((0, 0), (3, 3)),
                                              dimension_numbers=("NCHW", "OIHW", "NCHW"))
    conv = inception.nn.Conv(4, (1, 7), padding=((0, 0), (3, 3)), use_bias=False)
    flax_out = conv.apply({"params": {"kernel": weight.transpose(2, 3, 1, 0)}}, x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(flax_out, np.asarray(torch_like).transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Mixed_5b.branch1x1.conv.weight|lacks the tensor for Mixed_5b/branch1x1"):
        convert_inception_weights.convert_state_dict({k: v for k, v in state.items()
                                                      if k != "Mixed_5b.branch1x1.conv.weight"})


def test_weight_file_round_trips_and_bad_files_get_one_clear_error(tmp_path, fake_state_dict):
    arrays = convert_inception_weights.convert_state_dict(fake_state_dict)
    path = str(tmp_path / "inception_fid.npz")
    inception.save_weights(path, arrays, source_sha256=inception.SOURCE_SHA256_PREFIX + "0" * 56)
    params = inception.load_weights(path, expected_content_sha256=inception.content_sha256(arrays))
    np.testing.assert_array_equal(params["Mixed_7c"]["branch3x3_2a"]["conv"]["kernel"],
                                  arrays["Mixed_7c/branch3x3_2a/conv/kernel"])

    def error_of(path, **kwargs):
        with pytest.raises(inception.InceptionWeightsError) as caught:
            inception.load_weights(path, **kwargs)
        message = str(caught.value)
        assert "\n" not in message and inception.SOURCE_URL in message
        return message

    assert "no Inception weights" in error_of(str(tmp_path / "missing.npz"))
    # The digest and source checks come before the layout's: a one-array file reaches them (the
    # 24M-parameter file would be written and hashed once more for each).
    small = {"fc/bias": arrays["fc/bias"]}
    inception.save_weights(str(tmp_path / "small.npz"), small, source_sha256=inception.SOURCE_SHA256_PREFIX + "0" * 56)
    assert "not the pinned weights" in error_of(str(tmp_path / "small.npz"), expected_content_sha256="0" * 64)
    tampered = dict(np.load(tmp_path / "small.npz"))
    tampered["fc/bias"] = tampered["fc/bias"] + 1
    np.savez(tmp_path / "tampered.npz", **tampered)
    assert "corrupt" in error_of(str(tmp_path / "tampered.npz"))
    inception.save_weights(str(tmp_path / "other.npz"), small, source_sha256="f" * 64)
    assert "converted from a file" in error_of(str(tmp_path / "other.npz"))
    arrays["fc/bias"] = arrays["fc/bias"][:1000]
    inception.save_weights(str(tmp_path / "shape.npz"), arrays, source_sha256=inception.SOURCE_SHA256_PREFIX)
    assert "wrong shape fc/bias" in error_of(str(tmp_path / "shape.npz"))


# --- streaming features over the mesh ----------------------------------------------------------------

from genjax.evaluate import features as feature_stream  # noqa: E402


@jax.jit
def _toy_features(weight, pixels):
    flat = pixels.reshape(pixels.shape[0], -1)
    return {"pool3": jax.numpy.tanh(flat @ weight), "logits": flat[:, :5]}


def test_streamed_features_on_a_mesh_equal_one_shot_statistics():
    rng = np.random.default_rng(12)
    weight = rng.normal(size=(4 * 4 * 3, 6)).astype(np.float32) / 7
    pixels = rng.uniform(0, 255, size=(48, 4, 4, 3)).astype(np.float32) / 255
    batches = np.split(pixels, [8, 16, 24, 30, 40])  # a 6-row batch does not split over 4 devices
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:4])
    one_shot = np.asarray(_toy_features(weight, pixels)["pool3"], np.float64)
    for grid in (None, mesh):
        moments, kept = feature_stream.stream_features(_toy_features, weight, batches, "pool3", keep=("logits",),
                                                       mesh=grid)
        mu, sigma = frechet.gaussian_statistics(moments)
        np.testing.assert_allclose(mu, one_shot.mean(0), rtol=1e-5)
        np.testing.assert_allclose(sigma, np.cov(one_shot, rowvar=False), rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(kept["logits"], pixels.reshape(48, -1)[:, :5])


def test_source_batches_give_each_process_an_equal_contiguous_share():
    class Source:
        num_examples = 11
        records = [{"image": np.full((2, 2, 1), i, np.uint8)} for i in range(11)]

    shares = [[batch[:, 0, 0, 0].tolist() for batch in feature_stream.source_pixel_batches(Source, 2, p, 3)]
              for p in range(3)]
    assert shares == [[[0, 1], [2]], [[3, 4], [5]], [[6, 7], [8]]]
    first = next(iter(feature_stream.source_pixel_batches(Source, 4)))
    assert first.shape == (4, 2, 2, 3)


def test_grey_pixels_become_three_equal_channels():
    grey = np.arange(8.0).reshape(2, 2, 2, 1)
    rgb = feature_stream.to_rgb(grey)
    assert rgb.shape == (2, 2, 2, 3) and np.all(rgb == grey)


_TWO_PROCESS_SCRIPT = """
import sys, numpy as np, jax
process, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process)
from genjax.evaluate import features, frechet
from tests.test_image_metrics import _toy_features, _two_process_data
weight, pixels = _two_process_data()
share = pixels[process * 24:(process + 1) * 24]  # each process reads its own half
mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
moments, kept = features.stream_features(_toy_features, weight, np.split(share, 3), "pool3", keep=("logits",), mesh=mesh)
mu, sigma = frechet.gaussian_statistics(moments)
np.savez(f"{out}/{process}.npz", mu=mu, sigma=sigma, count=moments.count, logits=kept["logits"])
# The reference cache: process 0 alone decides, reads and writes; both take the same branch.
calls = []
def compute():
    calls.append(1)
    return features.stream_features(_toy_features, weight, np.split(share, 3), "pool3", mesh=mesh)[0]
cache = f"{out}/reference.npz"
first = frechet.load_or_compute_statistics(cache, compute, {"dataset": "toy"}, write=process == 0)
second = frechet.load_or_compute_statistics(cache, compute, {"dataset": "toy"}, write=process == 0)
np.savez(f"{out}/cache_{process}.npz", calls=len(calls), mu=second[0], sigma=second[1], count=second[2],
         first_sigma=first[1])
"""


def _two_process_data():
    rng = np.random.default_rng(13)
    weight = rng.normal(size=(4 * 4 * 3, 6)).astype(np.float32) / 7
    return weight, rng.uniform(0, 1, size=(48, 4, 4, 3)).astype(np.float32)


@pytest.mark.slow
def test_two_processes_merge_their_shares_into_the_statistics_of_the_union(tmp_path):
    import socket
    import subprocess
    import sys

    from tests.subprocess_env import cpu_environment

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    root = __import__("os").path.dirname(__import__("os").path.dirname(__file__))
    children = [subprocess.Popen(["timeout", "-s", "KILL", "240", sys.executable, "-c", _TWO_PROCESS_SCRIPT, str(i),
                                  port, str(tmp_path)], cwd=root, env=cpu_environment(2), stderr=subprocess.PIPE,
                                 text=True) for i in range(2)]
    for child in children:
        assert child.wait() == 0, child.stderr.read()[-3000:]
    weight, pixels = _two_process_data()
    expected = np.asarray(_toy_features(weight, pixels)["pool3"], np.float64)
    results = [np.load(tmp_path / f"{i}.npz") for i in range(2)]
    for result in results:
        assert int(result["count"]) == 48
        np.testing.assert_allclose(result["mu"], expected.mean(0), rtol=1e-5)
        np.testing.assert_allclose(result["sigma"], np.cov(expected, rowvar=False), rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(result["logits"], pixels.reshape(48, -1)[:, :5])
    np.testing.assert_array_equal(results[0]["sigma"], results[1]["sigma"])
    # The cache: computed once (by both, collectively), then read by process 0 and sent to both, bit for bit.
    for i in range(2):
        cached = np.load(tmp_path / f"cache_{i}.npz")
        assert int(cached["calls"]) == 1 and int(cached["count"]) == 48
        np.testing.assert_array_equal(cached["sigma"], results[0]["sigma"])
        np.testing.assert_array_equal(cached["first_sigma"], results[0]["sigma"])


def test_converter_refuses_a_file_that_is_not_pytorch_fids_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    source = tmp_path / "pt_inception.pth"
    source.write_bytes(b"not the weights")
    output = tmp_path / "inception_fid.npz"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-m", "experiments.convert_inception_weights", f"--source={source}",
                             f"--output={output}"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 1 and not output.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and inception.SOURCE_SHA256_PREFIX in lines[0] and inception.SOURCE_URL in lines[0]


# --- FID / IS / KID in --mode=evaluate (genjax.evaluate.image_metrics) -------------------------------

def _tiny_digits_experiment(data_dir, **evaluate):
    from configs import digits
    from genjax.experiment import build_experiment

    config = digits.get_config()
    config.data.data_dir = str(data_dir)
    config.model.kwargs = dict(model_channels=8, channel_mult=(1,), num_blocks=1, attn_resolutions=(),
                               label_dropout=0.1)
    config.training.batch_size = 16
    for name, value in evaluate.items():
        config.evaluate[name] = value
    return build_experiment(config)


def test_missing_inception_weights_are_a_config_error_naming_the_converter(tmp_path):
    from genjax.factory import ConfigError

    missing = str(tmp_path / "inception_fid.npz")
    with pytest.raises(ConfigError, match=r"^evaluate.inception_weights='.*inception_fid.npz' does not exist: download "
                                          r".* `python -m experiments.convert_inception_weights"):
        _tiny_digits_experiment(tmp_path / "tfds", inception_weights=missing)


@pytest.mark.slow  # Inception-v3 (random weights, 75 px inputs) on the 1,437 training digits: about a minute
def test_inception_metrics_pipeline_with_random_weights_from_a_file(tmp_path, monkeypatch):
    """The architecture at random weights, saved and loaded as the real file would be: the
    reference statistics of the digits training split are computed once and cached; FID of the
    training digits against them is 0, of noise clearly positive; IS and KID are finite."""
    from genjax.evaluate import image_metrics

    arrays = {key: np.asarray(value) for key, value in
              __import__("flax").traverse_util.flatten_dict(inception.random_params(3), sep="/").items()}
    weights = str(tmp_path / "inception_fid.npz")
    inception.save_weights(weights, arrays, source_sha256=inception.SOURCE_SHA256_PREFIX + "0" * 56)
    small = jax.jit(lambda params, pixels: inception.InceptionV3(75).apply({"params": params}, pixels))
    monkeypatch.setattr(image_metrics, "_apply", small)
    experiment = _tiny_digits_experiment(tmp_path / "tfds", inception_weights=weights,
                                         inception_sha256=inception.content_sha256(arrays))
    reference = image_metrics.load_reference(experiment, tmp_path)
    assert reference.count == 1437 and (tmp_path / "eval" / "inception_reference.npz").exists()
    from genjax.evaluate.digits_classifier import digits_split

    train = digits_split("train")[0].astype(np.float32) / 127.5 - 1.0  # the training digits in the data range
    same = image_metrics.sample_metrics(experiment, reference, train, jax.random.key(0))
    noise = image_metrics.sample_metrics(experiment, reference,
                                         np.random.default_rng(0).uniform(-1, 1, (200, 8, 8, 1)), jax.random.key(0))
    assert abs(same["fid"]) < 1e-3 * noise["fid"] and noise["fid"] > 0
    assert noise["kid"] > 10 * noise["kid_std"] and noise["kid"] > 10 * abs(same["kid"])
    assert np.isfinite(same["inception_score"]) and same["inception_score"] >= 1.0
    assert same["inception_seconds"] > 0 and same["inception_images_per_second"] > 0
    # A second evaluation reads the cache instead of recomputing it.
    monkeypatch.setattr(image_metrics.features_lib, "stream_features", None)
    again = image_metrics.load_reference(experiment, tmp_path)
    np.testing.assert_array_equal(again.sigma, reference.sigma)
