"""The network/batch contract: networks are called batched as
module.apply(variables, x [B, ...], noise_level [B], condition, train=..., rngs={"dropout": key});
objectives pass the batch's labels, train=True and a dropout key derived from the step's keys;
samplers and the likelihood pass the samples' labels in eval mode; data streams give a dict.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import factory
from genjax.data.stream import ArrayStream
from genjax.evaluate.sampling import draw
from genjax.experiment import build_experiment, derive_key
from genjax.factory import ConfigError
from genjax.nets.concatsquash import ConcatSquashMLP
from genjax.nets.mlp import TimeConditionedMLP
from genjax.objectives.batch import DROPOUT_STREAM
from genjax.objectives.flow_matching import conditional_flow_matching_loss
from genjax.objectives.maximum_likelihood import cnf_maximum_likelihood_loss
from genjax.objectives.poisson_field import poisson_field_loss
from genjax.objectives.score_matching import denoising_score_matching_loss
from genjax.processes import VPSDE
from genjax.processes.cnf import ContinuousNormalizingFlow
from genjax.processes.flow_matching import FlowMatchingPath
from genjax.processes.pfgm import PFGMProcess
from genjax.processes.views import Model
from genjax.samplers.likelihood import log_likelihood
from genjax.samplers.prior import example_keys
from tests.tiny_config import tiny_config

B, D = 4, 2
X = jax.random.normal(jax.random.key(0), (B, D))
T = jnp.linspace(0.1, 0.9, B)
LABELS = jnp.array([0, 3, 1, 2], jnp.int32)


def randomised(params, seed=1):
    """Every leaf (an array or a ShapeDtypeStruct) replaced by N(0, 0.5^2) draws (the MLP's
    output layer starts at zero); drawn with numpy, so no program is compiled per leaf shape."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: (0.5 * rng.normal(size=leaf.shape)).astype(np.float32), params)


NETWORKS = {
    "mlp": lambda **kw: TimeConditionedMLP(hidden_dim=16, num_layers=1, embedding_dim=8, **kw),
    "mlp_field": lambda **kw: TimeConditionedMLP(hidden_dim=16, num_layers=1, embedding_dim=8, output_dim=D + 1, **kw),
    "concatsquash": lambda **kw: ConcatSquashMLP(hidden_dims=(8, 8), **kw),
}


def init(network, condition=None):
    key = jax.random.key(0)
    return network.init({"params": key, "dropout": key}, X, T, condition, train=False)


def init_shapes(network, condition=None):
    """The variables' shapes (traced, not compiled: enough where only shapes or errors are checked)."""
    return jax.eval_shape(lambda: init(network, condition))


def jitted_apply(network):
    """network.apply compiled once per test (eagerly, each of its operations is a program)."""
    return jax.jit(lambda params, x, t, condition=None, train=False, key=None: network.apply(
        params, x, t, condition, train=train, rngs=None if key is None else {"dropout": key}),
        static_argnames="train")


# --- the networks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("num_classes", [0, 5])
def test_batched_call_shapes(name, num_classes):
    network = NETWORKS[name](num_classes=num_classes)
    condition = LABELS if num_classes else None
    params = init_shapes(network, condition)
    out = jax.eval_shape(lambda p: network.apply(p, X, T, condition, train=True, rngs={"dropout": jax.random.key(1)}),
                         params)
    assert out.shape == (B, D + 1 if name == "mlp_field" else D)
    assert jax.eval_shape(lambda p: network.apply(p, X, T, condition, train=False), params).shape == out.shape


@pytest.mark.parametrize("name", ["mlp", "concatsquash"])
def test_flat_networks_refuse_images_and_a_scalar_noise_level(name):
    network = NETWORKS[name]()
    params = init_shapes(network)
    images = jnp.zeros((B, 8, 8, 1))
    with pytest.raises(ValueError, match=r"batch of vectors x \[B, D\], got shape \(4, 8, 8, 1\).*U-Net"):
        jax.eval_shape(lambda p: network.apply(p, images, T, None), params)
    with pytest.raises(ValueError, match=r"one noise level per example, shape \(4,\), got shape \(\)"):
        jax.eval_shape(lambda p: network.apply(p, X, jnp.float32(0.5), None), params)


@pytest.mark.parametrize("name", ["mlp", "concatsquash"])
def test_condition_must_match_how_the_network_was_built(name):
    unconditional = NETWORKS[name]()
    params = init_shapes(unconditional)
    with pytest.raises(ValueError, match=r"is unconditional \(num_classes=0\) and got a condition"):
        jax.eval_shape(lambda p: unconditional.apply(p, X, T, LABELS), params)
    conditional = NETWORKS[name](num_classes=5)
    params = init_shapes(conditional, LABELS)
    with pytest.raises(ValueError, match=r"is class-conditional \(num_classes=5\) and needs condition"):
        jax.eval_shape(lambda p: conditional.apply(p, X, T, None), params)
    with pytest.raises(ValueError, match=r"integer labels of shape \(4,\)"):
        jax.eval_shape(lambda p: conditional.apply(p, X, T, LABELS.astype(jnp.float32)), params)


@pytest.mark.parametrize("name", ["mlp", "concatsquash"])
def test_a_conditional_network_depends_on_its_label(name):
    network = NETWORKS[name](num_classes=5)
    params = randomised(init_shapes(network, LABELS))
    apply = jitted_apply(network)
    same_x, same_t = jnp.broadcast_to(X[:1], X.shape), jnp.full((B,), 0.4)
    out = np.asarray(apply(params, same_x, same_t, LABELS))
    again = np.asarray(apply(params, same_x, same_t, jnp.array([0, 3, 0, 3], jnp.int32)))
    np.testing.assert_array_equal(out[:2], again[:2])  # same input and label, same output
    np.testing.assert_array_equal(out[0], again[2])
    # Different labels, different outputs (each pair of the four labels).
    for i in range(B):
        for j in range(i):
            assert float(np.max(np.abs(out[i] - out[j]))) > 1e-3, (i, j)


class TinyDropout(nn.Module):
    """The contract's signature around one nn.Dropout."""

    @nn.compact
    def __call__(self, x, noise_level, condition=None, train=False):
        return nn.Dropout(0.5, deterministic=not train)(nn.Dense(8)(x) + noise_level[:, None])


@pytest.mark.parametrize("network", [TinyDropout(), NETWORKS["mlp"](dropout=0.5)], ids=["tiny", "mlp"])
def test_dropout_draws_from_the_key_in_train_mode_only(network):
    params = randomised(init_shapes(network))
    apply = jitted_apply(network)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    train_1 = np.asarray(apply(params, X, T, None, train=True, key=k1))
    train_2 = np.asarray(apply(params, X, T, None, train=True, key=k2))
    assert float(np.max(np.abs(train_1 - train_2))) > 1e-3
    np.testing.assert_array_equal(train_1, apply(params, X, T, None, train=True, key=k1))
    eval_1 = apply(params, X, T, None, train=False)
    np.testing.assert_array_equal(eval_1, apply(params, X, T, None, train=False, key=k2))


def quick_config():
    """tiny_config with one sampler and no likelihood to check at build time."""
    config = tiny_config()
    config.evaluate.samplers = "euler_maruyama"
    config.evaluate.nll_num_points = 0
    config.samplers.euler_maruyama.num_steps = 5
    return config


def test_experiment_model_passes_train_and_dropout_key_to_the_network():
    config = quick_config()
    config.model.kwargs.dropout = 0.5
    experiment = build_experiment(config, jax.devices()[:1])
    params = randomised(experiment.state_shapes.params)
    fn = jax.jit(lambda params, x, t, dropout_key=None, train=False: experiment.model(params).output_fn(
        x, t, dropout_key=dropout_key, train=train), static_argnames="train")
    k1, k2 = jax.random.key(1), jax.random.key(2)
    trained = [np.asarray(fn(params, X, T, dropout_key=k, train=True)) for k in (k1, k2)]
    assert float(np.max(np.abs(trained[0] - trained[1]))) > 1e-3
    np.testing.assert_array_equal(fn(params, X, T), fn(params, X, T, dropout_key=k2, train=False))


# --- what objectives and samplers pass to the model ------------------------------------------------
class Recorder:
    """A batched model that records what it is called with (concrete when called eagerly)."""

    def __init__(self, output=lambda x, t, condition: jnp.zeros_like(x)):
        self.calls, self.output = [], output

    def __call__(self, x, t, condition=None, *, dropout_key=None, train=False):
        self.calls.append({"condition": condition, "dropout_key": dropout_key, "train": train})
        return self.output(x, t, condition)


OBJECTIVES = {
    "dsm": (denoising_score_matching_loss, VPSDE(), "noise"),
    "cfm": (conditional_flow_matching_loss, FlowMatchingPath(), "velocity"),
    "poisson_field": (poisson_field_loss, PFGMProcess(), "poisson_field"),
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objective_passes_labels_train_and_its_dropout_key(name):
    loss, process, kind = OBJECTIVES[name]
    width = D + 1 if kind == "poisson_field" else D
    recorder = Recorder(lambda x, t, condition: jnp.zeros((x.shape[0], width)) + 0.1)
    keys = example_keys(jax.random.key(3), B)

    @jax.jit
    def passed(keys):  # what the model received (compiled whole; eagerly each operation is a program)
        loss(Model(recorder, kind), process, {"x": X, "label": LABELS}, keys)
        (call,) = recorder.calls
        return call["condition"], jax.random.key_data(call["dropout_key"]), jax.random.fold_in(keys[0], DROPOUT_STREAM)

    condition, dropout_key, expected = passed(keys)
    np.testing.assert_array_equal(condition, LABELS)
    assert recorder.calls[0]["train"] is True
    np.testing.assert_array_equal(dropout_key, jax.random.key_data(expected))


def test_cnf_objective_passes_each_label_in_train_mode():
    """A velocity v = label (per example): the flow translates x by label * T, which changes
    log p_T(z) and hence the loss; train=True reaches the model."""
    process = ContinuousNormalizingFlow()
    recorder = Recorder(lambda x, t, condition: jnp.broadcast_to(condition[:, None].astype(x.dtype), x.shape))
    keys = example_keys(jax.random.key(3), B)
    options = dict(solver="euler", num_steps=2)

    @jax.jit
    def loss_and_expected(keys):
        loss, _ = cnf_maximum_likelihood_loss(Model(recorder, "velocity"), process, {"x": X, "label": LABELS}, keys,
                                              **options)
        shift = jnp.broadcast_to(LABELS[:, None].astype(X.dtype) * process.t_max, X.shape)
        return loss, -jnp.mean(jax.vmap(process.prior_log_prob)(X + shift))  # constant field: divergence 0

    loss, expected = loss_and_expected(keys)
    assert recorder.calls and all(call["train"] is True and call["dropout_key"] is not None for call in recorder.calls)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def label_denoiser():
    """A denoised-output model D(x, t, c) = c: every sampler that ends on Tweedie's mean returns
    the label of its example, and the probability flow ends within sigma(t_min) of it."""
    return Recorder(lambda x, t, condition: jnp.broadcast_to(condition[:, None].astype(x.dtype), x.shape))


@pytest.mark.parametrize("sampler", list(factory.SAMPLERS))
def test_every_sampler_passes_each_samples_label_in_eval_mode(sampler):
    config = tiny_config()
    config.samplers.euler_maruyama.num_steps = 5
    config.samplers.predictor_corrector.num_steps = 5
    config.samplers.ddim.num_steps = 5
    config.samplers.edm_heun.num_steps = 5
    recorder = label_denoiser()
    sample = factory.build_sampler(config, sampler)
    samples = jax.jit(lambda key: sample(VPSDE(), Model(recorder, "denoised"), key, B, (D,),
                                         condition=LABELS).samples)(jax.random.key(0))
    expected = np.broadcast_to(np.asarray(LABELS, np.float32)[:, None], (B, D))
    np.testing.assert_allclose(samples, expected, atol=0.05)
    assert recorder.calls and all(call["train"] is False and call["dropout_key"] is None for call in recorder.calls)


def test_likelihood_passes_each_points_label_in_eval_mode():
    """Point i is scored under label i: the same as the unconditional model D = label_i alone."""
    recorder = label_denoiser()
    options = dict(rtol=1e-4, atol=1e-4)
    together = jax.jit(lambda x, labels: log_likelihood(VPSDE(), Model(recorder, "denoised"), x, condition=labels,
                                                        **options).log_prob)(X, LABELS)

    def alone(x, label):
        model = Model.from_per_example(lambda y, t: jnp.full_like(y, label), "denoised")
        return log_likelihood(VPSDE(), model, x[None], **options).log_prob[0]

    np.testing.assert_allclose(together, jax.jit(jax.vmap(alone))(X, LABELS.astype(jnp.float32)), rtol=1e-5)
    assert all(call["train"] is False and call["dropout_key"] is None for call in recorder.calls)


def test_a_per_example_oracle_refuses_a_condition():
    with pytest.raises(ValueError, match="takes no condition"):
        factory.build_sampler(tiny_config(), "ddim")(VPSDE(), lambda x, t: -x, jax.random.key(0), B, (D,),
                                                     condition=LABELS)


# --- data: the batch dict, end to end ---------------------------------------------------------------
def labelled_blobs(key, num):
    """Two 2-D blobs at -2 and +2, labelled 0 and 1."""
    label = jax.random.bernoulli(key, 0.5, (num,)).astype(jnp.int32)
    x = 4.0 * label[:, None].astype(jnp.float32) - 2.0 + 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (num, D))
    return {"x": x, "label": label}


def test_array_stream_gives_dicts_with_aligned_rows():
    data = {"x": np.arange(20, dtype=np.float32).reshape(10, 2), "label": np.arange(10, dtype=np.int32)}
    stream = ArrayStream(data, 4, seed=0, process_index=1, process_count=2)
    batch = stream.local_batch(3)
    assert set(batch) == {"x", "label"} and batch["x"].shape == (2, 2) and batch["label"].shape == (2,)
    np.testing.assert_array_equal(batch["x"][:, 0], 2 * batch["label"])
    assert set(ArrayStream(data["x"], 4, seed=0).local_batch(0)) == {"x"}
    with pytest.raises(ValueError, match="same number of rows"):
        ArrayStream({"x": data["x"], "label": data["label"][:5]}, 4, seed=0)


def test_toy_batches_hold_x_only():
    experiment = build_experiment(tiny_config(), jax.devices()[:1])
    batch = experiment.global_batch(experiment.train_stream(), 0)
    assert set(batch) == {"x"} and batch["x"].shape == (64, D)


@pytest.fixture
def labelled_dataset(monkeypatch):
    monkeypatch.setitem(factory.DATASETS, "labelled_blobs", labelled_blobs)


def conditional_experiment():
    config = quick_config()
    config.data.name = "labelled_blobs"
    config.model.num_classes = 2
    return build_experiment(config, jax.devices()[:2])


def test_a_conditional_experiments_batches_carry_their_labels(labelled_dataset):
    experiment = conditional_experiment()
    batch = experiment.global_batch(experiment.train_stream(), 0)
    assert set(batch) == {"x", "label"} and batch["label"].dtype == jnp.int32 and batch["label"].shape == (64,)
    np.testing.assert_array_equal(np.asarray(batch["x"][:, 0]) > 0, np.asarray(batch["label"]) == 1)
    np.testing.assert_array_equal(experiment.default_condition(5), [0, 1, 0, 1, 0])


@pytest.mark.slow  # end to end: a train step, the loss twice and a sharded sample set (about 20 s)
def test_a_class_conditional_run_trains_and_samples_by_label(labelled_dataset):
    experiment = conditional_experiment()
    config = experiment.config
    batch = experiment.global_batch(experiment.train_stream(), 0)
    state, metrics = experiment.jitted_train_step()(experiment.init_state(), batch)
    assert np.isfinite(float(metrics["loss"]))
    # The labels reach the network: the loss changes when they are flipped.
    keys = example_keys(jax.random.key(0), 64)
    params = randomised(state.params)
    loss = jax.jit(experiment.loss_fn)
    flipped = {"x": batch["x"], "label": 1 - batch["label"]}
    assert abs(float(loss(params, batch, keys) - loss(params, flipped, keys))) > 1e-4
    # Sampling on the 2-device mesh (3 + 2 samples, one padded) gives sample i its label, as one
    # direct call with those labels does.
    condition = jnp.array([1, 1, 0, 1, 0], jnp.int32)
    drawn = draw(experiment, params, "euler_maruyama", 5, condition=np.asarray(condition))
    sampler = factory.build_sampler(config, "euler_maruyama")
    direct = jax.jit(lambda key: sampler(experiment.process, experiment.model(params), key, 5, (D,),
                                         condition=condition).samples)(derive_key(config.seed, "sample"))
    np.testing.assert_allclose(drawn["samples"], direct, rtol=1e-5, atol=1e-5)


def test_num_classes_needs_labelled_data_and_a_conditional_network(labelled_dataset):
    config = quick_config()
    config.model.num_classes = 3
    with pytest.raises(ConfigError, match="has no labels; set model.num_classes=0"):
        build_experiment(config, jax.devices()[:1])
    config.data.name = "labelled_blobs"
    config.model.num_classes = -1
    with pytest.raises(ConfigError, match="model.num_classes=-1 must be a non-negative integer"):
        build_experiment(config, jax.devices()[:1])
    config.model.num_classes = 0
    config.model.kwargs.num_classes = 2
    with pytest.raises(ConfigError, match=r"model.kwargs.num_classes=2: .* set model.num_classes=2 and remove it"):
        build_experiment(config, jax.devices()[:1])


def test_noise_input_sigma_feeds_the_kernels_standard_deviation():
    """model.noise_input='sigma' (score_sde's VE networks) feeds sigma(t) of the process's kernel;
    'time' feeds t itself."""
    import ml_collections

    from genjax.processes.ve import VESDE

    process = VESDE(sigma_min=0.01, sigma_max=50.0)
    seen = {}

    def network_fn(x, noise_level, condition=None, *, dropout_key=None, train=False):
        seen["noise_level"] = noise_level
        return x

    config = ml_collections.ConfigDict({"model": {"output": "score", "noise_input": "sigma"},
                                        "process": {"name": "ve"}})
    factory.build_model(config, process, network_fn).output_fn(X, T)
    sigma = jnp.sqrt(0.01**2 * ((50.0 / 0.01) ** (2 * T) - 1.0))  # sigma_ve(t)^2 - sigma_min^2
    np.testing.assert_allclose(seen["noise_level"], sigma, rtol=1e-5)
    config.model.noise_input = "time"
    factory.build_model(config, process, network_fn).output_fn(X, T)
    np.testing.assert_array_equal(seen["noise_level"], T)
    config.model.output, config.model.noise_input = "edm", "sigma"
    with pytest.raises(ConfigError, match=r"model.noise_input='sigma' does not apply to model.output='edm'"):
        factory.build_model(config, process, network_fn)
    config.model.output, config.model.noise_input = "score", "log_sigma"
    with pytest.raises(ConfigError, match=r"model.noise_input"):
        factory.build_model(config, process, network_fn)
