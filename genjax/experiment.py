"""Composes one experiment from its config: process + network + objective + data + mesh.

This is where the independent layers meet. `build_experiment` validates the whole config
up front (so a bad value fails before anything is written) and returns an `Experiment`
whose methods give the pure pieces the train loop, the sampler and the evaluator use.

Validation has three parts: plain range checks of the scalar fields (below); the
constructors of the process and network, which check their own parameters; and, for the
sampler options, the objective options and the likelihood options, an abstract trace
(`jax.eval_shape`) of the sampler, loss or likelihood with the configured model around a
stand-in network that stops the trace at its first call (so a sampler that needs a score
refuses a model without one here, before training). Every check those functions make on their arguments
comes before their first score evaluation, so all of them run at build time (about 0.1 s
per function) and the options are validated by the code that uses them, not by a copy of
its rules.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genjax import factory
from genjax.data.images.datasets import ImageDataset, value_range
from genjax.data.stream import ArrayStream
from genjax.factory import ConfigError
from genjax.processes import views
from genjax.processes.views import ScoreFn
from genjax.samplers.guidance import guided_model
from genjax.samplers.likelihood import log_likelihood
from genjax.train import parallel
from genjax.train.optimizer import SCHEDULES, make_optimizer
from genjax.train.state import TrainState, create_train_state
from genjax.train.step import loss_and_metrics, train_step, train_steps

# Independent streams of randomness, all derived from config.seed.
KEY_PURPOSES = ("init", "train", "data", "sample", "reference_data", "metrics", "dequantization")


def derive_key(seed: int, purpose: str) -> jax.Array:
    """The key for one purpose: fold_in(PRNGKey(seed), index of the purpose)."""
    return jax.random.fold_in(jax.random.key(seed), KEY_PURPOSES.index(purpose))


def _positive_int(config, path: str, allow_zero: bool = False) -> int:
    section, field = path.split(".")
    value = config[section][field]
    if not isinstance(value, int) or value < (0 if allow_zero else 1):
        bound = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{path}={value!r} must be a {bound} integer")
    return value


def _check_number(config, path: str, ok: Callable[[float], bool], requirement: str) -> None:
    """ConfigError unless config.<path> is a number for which ok(value) holds (NaN fails
    every comparison, so a NaN value is rejected)."""
    section, field = path.split(".")
    value = config[section][field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise ConfigError(f"{path}={value!r} must be {requirement}")


def _check_fields(config) -> None:
    """Range checks of the scalar fields that no constructor checks."""
    for path in ("training.num_steps", "evaluate.nll_num_points", "optimizer.warmup_steps",
                 "sharding.fsdp_min_size", "model.num_classes",
                 "sampling.chunk_size", "evaluate.nll_chunk_size"):
        _positive_int(config, path, allow_zero=True)
    for path in ("training.batch_size", "training.log_every", "training.sync_every", "training.checkpoint_every",
                 "training.keep_checkpoints", "training.grad_accum_steps", "training.steps_per_dispatch",
                 "data.num_train_examples", "sampling.num_samples", "evaluate.num_samples", "mesh.num_slices"):
        _positive_int(config, path)
    _check_number(config, "training.ema_decay", lambda v: 0 <= v < 1, "in [0, 1)")
    _check_number(config, "training.ema_rampup_ratio", lambda v: 0 <= v < float("inf"), "finite and >= 0 (0: no warm-up)")
    _check_number(config, "optimizer.learning_rate", lambda v: v > 0, "> 0")
    _check_number(config, "optimizer.grad_clip_norm", lambda v: v >= 0, ">= 0 (0 disables clipping)")
    for path in ("optimizer.b1", "optimizer.b2"):
        _check_number(config, path, lambda v: 0 <= v < 1, "in [0, 1)")
    _check_number(config, "optimizer.eps", lambda v: v > 0, "> 0")
    _check_number(config, "optimizer.weight_decay", lambda v: v >= 0, ">= 0")
    if config.optimizer.decay not in SCHEDULES:
        raise ConfigError(f"optimizer.decay={config.optimizer.decay!r} is not known; valid choices: {', '.join(SCHEDULES)}")
    try:
        derive_key(config.seed, "init")
    except (OverflowError, TypeError):
        raise ConfigError(f"seed={config.seed!r} must be an integer that fits in 64 bits") from None


class _ScoreCalled(Exception):
    """Ends an abstract trace at its first network evaluation (`_check_by_tracing`)."""


def _stand_in_score(x, t, condition=None, *, dropout_key=None, train=False):
    raise _ScoreCalled


def _stand_in_model(config, process) -> views.Model:
    """The configured model (its output kind and wrapping) around a network that stops the trace."""
    return factory.build_model(config, process, _stand_in_score)


def _check_by_tracing(section: str, options, fn: Callable[[], Any]) -> None:
    """Trace fn() abstractly up to its first call of `_stand_in_score`, so that the checks
    it makes on its arguments run now; the error they raise becomes a ConfigError naming
    `section`.<option>."""
    try:
        jax.eval_shape(fn)
    except _ScoreCalled:
        pass
    except (ValueError, TypeError, ArithmeticError) as error:
        raise factory.option_error(section, dict(options), error) from None


def _check_options_by_tracing(config, process, objective, data_shape: tuple[int, ...]) -> None:
    """The options of every sampler the run may use (sampling.sampler and evaluate.samplers),
    of the objective, and of the likelihood (when evaluate.nll_num_points > 0)."""
    key = jax.random.key(0)
    example = jnp.zeros((1,) + data_shape, jnp.float32)
    condition = jnp.zeros((1,), jnp.int32) if config.model.num_classes else None
    batch = {"x": example} if condition is None else {"x": example, "label": condition}
    if getattr(process, "uses_given_pairs", False):  # reflow: batches carry the source end of each pair
        batch["source"] = example
    model = _stand_in_model(config, process)
    for name in dict.fromkeys([config.sampling.sampler, *evaluation_samplers(config)]):
        sampler = factory.build_sampler(config, name)
        _check_by_tracing(f"samplers.{name}", config.samplers.get(name, {}),
                          lambda: sampler(process, model, key, 1, data_shape, condition=condition))
    _check_by_tracing("objective.kwargs", config.objective.kwargs,
                      lambda: objective(model, process, batch, jax.random.split(key, 1)))
    if config.evaluate.nll_num_points:
        options = dict(config.evaluate.likelihood)
        _check_by_tracing("evaluate.likelihood", options,
                          lambda: log_likelihood(process, model, example, key, condition=condition, **options))


GUIDANCE_FIELDS = ("sampling.guidance", "evaluate.guidance")


def _check_guidance(config, process) -> None:
    """A guidance weight (genjax.samplers.guidance) must be >= 0, and > 0 only for a
    class-conditional network trained with label dropout (whose null label means something)."""
    for path in GUIDANCE_FIELDS:
        _check_number(config, path, lambda v: 0 <= v < float("inf"), "finite and >= 0 (0: no guidance)")
        section, field = path.split(".")
        weight = config[section][field]
        if not weight:
            continue
        if not config.model.num_classes:
            raise ConfigError(f"{path}={weight!r}: classifier-free guidance needs a class-conditional model; set "
                              f"{path}=0, or train with model.num_classes > 0 and model.kwargs.label_dropout > 0")
        if not config.model.kwargs.get("label_dropout", 0.0):
            raise ConfigError(f"{path}={weight!r}: the network is trained without label dropout "
                              f"(model.kwargs.label_dropout), so its null label was never learned; set {path}=0, "
                              f"or train a network that takes label_dropout (ddpmpp, ncsnpp, song_unet) with "
                              f"model.kwargs.label_dropout=0.1")
        try:
            guided_model(_stand_in_model(config, process), weight)
        except ValueError as error:
            raise ConfigError(f"{path}={weight!r}: {error}") from None


def _check_inception(config, image_dataset) -> None:
    """evaluate.inception_weights: a file that exists, for image data (FID / IS / KID)."""
    from genjax.evaluate.image_metrics import check_inception_config

    if config.evaluate.inception_weights and image_dataset is None:
        raise ConfigError(f"evaluate.inception_weights={config.evaluate.inception_weights!r}: FID, IS and KID are for "
                          f"images, and data.name={config.data.name!r} is not an image dataset; set it to ''")
    try:
        check_inception_config(config)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def evaluation_samplers(config) -> list[str]:
    names = [name.strip() for name in config.evaluate.samplers.split(",") if name.strip()]
    for name in names:
        factory.lookup(factory.SAMPLERS, name, "evaluate.samplers")
    return names


@dataclasses.dataclass(frozen=True)
class Experiment:
    config: Any
    process: Any
    network: Any
    dataset_fn: Callable
    objective: Callable
    optimizer: Any
    mesh: jax.sharding.Mesh
    data_shape: tuple[int, ...]
    # An image dataset (genjax.data.images) streams from its tfds source instead of drawing
    # from dataset_fn; None for the in-memory toy sets.
    image_dataset: Any = None

    # --- the model as functions -----------------------------------------------------------
    @property
    def conditional(self) -> bool:
        """Whether the network takes the data's labels (config.model.num_classes > 0)."""
        return self.config.model.num_classes > 0

    def model(self, params) -> views.Model:
        """The network with `params` as a `views.Model` (its output read as config.model.output
        says): samplers, the likelihood and the objective ask it for the view they need. The
        network is called batched, as the network contract says (dropout only in train mode)."""

        def network_fn(x, t, condition=None, *, dropout_key=None, train=False):
            rngs = None if dropout_key is None else {"dropout": dropout_key}
            return self.network.apply(params, x, t, condition, train=train, rngs=rngs)

        return factory.build_model(self.config, self.process, network_fn,
                                   shared_noise_level=getattr(self.network, "SHARED_NOISE_LEVEL", False))

    def score_fn(self, params) -> ScoreFn:
        """Per-example score view (x, t, condition=None) -> s of the model (`views.NoScoreError`
        if it has none)."""
        return views.score_fn(self.process, self.model(params))

    def loss_and_metrics(self, params, batch, example_keys):
        """(loss, metrics) of the objective on a batch dict {"x": [B, *shape], "label": [B] if
        conditional}; metrics is the objective's dict of batch-mean scalars ({} if it has none)."""
        return loss_and_metrics(self.objective(self.model(params), self.process, batch, example_keys))

    def loss_fn(self, params, batch, example_keys):
        """The objective's scalar loss on a batch (see `loss_and_metrics`)."""
        return self.loss_and_metrics(params, batch, example_keys)[0]

    # --- state, shardings, step -------------------------------------------------------------
    def _init_state(self) -> TrainState:
        dummy_x = jnp.zeros((1,) + self.data_shape, jnp.float32)
        condition = jnp.zeros((1,), jnp.int32) if self.conditional else None
        key = derive_key(self.config.seed, "init")
        params = self.network.init({"params": key, "dropout": key}, dummy_x, jnp.zeros((1,)), condition, train=False)
        train_key = jax.random.key_data(derive_key(self.config.seed, "train"))
        return create_train_state(params, self.optimizer, train_key)

    @functools.cached_property
    def state_shapes(self) -> TrainState:
        """eval_shape of the initial state (traces the network's and the optimizer's init)."""
        return jax.eval_shape(self._init_state)

    @functools.cached_property
    def state_shardings(self):
        """Shardings of every state leaf, from the config's rule applied to eval_shape(init)."""
        rule = factory.build_sharding_rule(self.config, self.mesh)
        return parallel.shardings_from_rule(self.state_shapes, self.mesh, rule)

    def abstract_state(self):
        """ShapeDtypeStructs of the state with this mesh's shardings (a restore target)."""
        return jax.tree.map(
            lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), self.state_shapes,
            self.state_shardings
        )

    def init_state(self) -> TrainState:
        """A fresh state, created directly with its shardings."""
        return jax.jit(self._init_state, out_shardings=self.state_shardings)()

    @property
    def steps_per_dispatch(self) -> int:
        return self.config.training.steps_per_dispatch

    @functools.cached_property
    def batch_sharding(self):
        """Batch axis over data and fsdp; with several steps per dispatch the batches come
        stacked [k, B, ...] and the leading axis stays whole."""
        return parallel.batch_sharding(self.mesh, leading=int(self.steps_per_dispatch > 1))

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """The arrays of a training batch: the data, and its labels for a conditional model."""
        return ("x", "label") if self.conditional else ("x",)

    @property
    def global_batch_shape(self) -> tuple[int, ...]:
        """Shape of the batch's "x" ([k, B, *shape] with k steps per dispatch)."""
        shape = (self.config.training.batch_size,) + self.data_shape
        return ((self.steps_per_dispatch,) + shape) if self.steps_per_dispatch > 1 else shape

    def _global_shapes(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        x_shape = self.global_batch_shape
        leading = x_shape[: len(x_shape) - len(self.data_shape)]
        shapes = {"x": (x_shape, jnp.float32), "label": (leading, jnp.int32)}
        return {name: shapes[name] for name in self.batch_keys}

    def jitted_train_step(self):
        """train_step (or train_steps over k stacked batches) jitted with explicit in/out
        shardings; the input state is donated."""
        options = dict(
            loss_fn=self.loss_and_metrics,
            optimizer=self.optimizer,
            ema_decay=self.config.training.ema_decay,
            ema_rampup_ratio=self.config.training.ema_rampup_ratio,
            grad_accum_steps=self.config.training.grad_accum_steps,
        )
        step = functools.partial(train_steps if self.steps_per_dispatch > 1 else train_step, **options)
        return jax.jit(
            step,
            in_shardings=(self.state_shardings, self.batch_sharding),
            out_shardings=(self.state_shardings, parallel.replicated(self.mesh)),
            donate_argnums=0,
        )

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        return {name: jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_sharding)
                for name, (shape, dtype) in self._global_shapes().items()}

    # --- data ---------------------------------------------------------------------------------
    def training_data(self) -> dict[str, np.ndarray]:
        """{"x": [N, *shape]} (+ "label": [N] for a conditional model), drawn from the data key."""
        key = derive_key(self.config.seed, "data")
        data = as_batch(self.dataset_fn(key, self.config.data.num_train_examples))
        return {name: np.asarray(data[name]) for name in self.batch_keys}

    def train_stream(self):
        """The training stream (ArrayStream for toy sets, ImageStream for image datasets): batch
        `step` is a pure function of (seed, step), this process's share only."""
        if self.image_dataset is not None:
            stream = self.image_dataset.stream(self.config, jax.process_index(), jax.process_count())
            channels = stream.source.image_shape[-1]
            if channels != self.data_shape[-1]:
                raise ConfigError(f"data.channels={self.data_shape[-1]}: {stream.source.identity} has {channels}-channel "
                                  f"images; set data.channels={channels}")
            return stream
        return ArrayStream(
            self.training_data(),
            self.config.training.batch_size,
            seed=self.config.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )

    def reference_batch(self, num: int) -> dict[str, np.ndarray]:
        """Fresh draws from the true distribution, independent of the training set, as a batch
        dict (labels only for a conditional model). For an image dataset: `num` examples of the
        held-out split config.evaluate.reference_split, in an order drawn from the seed (all of
        them if the split is smaller)."""
        if self.image_dataset is not None:
            return self._held_out_images(num)
        data = as_batch(self.dataset_fn(derive_key(self.config.seed, "reference_data"), num))
        return {name: np.asarray(data[name]) for name in self.batch_keys}

    def _held_out_images(self, num: int) -> dict[str, np.ndarray]:
        from genjax.data.images.stream import ImageStream

        data = self.config.data.copy_and_resolve_references()
        with data.unlocked():
            data.split = self.config.evaluate.reference_split
        source = self.image_dataset.source(data)
        stream = ImageStream(source, min(num, source.num_examples), self.config.seed, resolution=int(data.resolution),
                             image_key=data.image_key, label_key=data.label_key, value_range=self.data_range)
        batch = stream.local_batch(0)
        return {name: batch[name] for name in self.batch_keys}

    @property
    def data_range(self) -> tuple[float, float]:
        """The (lo, hi) an image dataset's pixels 0..255 are mapped onto (config.data.value_range)."""
        return value_range(self.config.data)

    def reference_data(self, num: int) -> np.ndarray:
        """The "x" of `reference_batch`."""
        return self.reference_batch(num)["x"]

    def default_condition(self, num: int) -> np.ndarray | None:
        """Labels for a sample set of a conditional model: class i % num_classes for sample i
        (a class-balanced set); None for an unconditional one."""
        return np.arange(num, dtype=np.int32) % self.config.model.num_classes if self.conditional else None

    def global_batch(self, stream: ArrayStream, step: int) -> dict[str, jax.Array]:
        """The global batch dict (or k stacked batches) starting at `step`, from this process's
        rows; the labels only for a conditional model."""
        if self.steps_per_dispatch == 1:
            local = stream.local_batch(step)
        else:
            batches = [stream.local_batch(step + i) for i in range(self.steps_per_dispatch)]
            local = {name: np.stack([batch[name] for batch in batches]) for name in self.batch_keys}
        return {name: parallel.global_batch(np.asarray(local[name], dtype), self.batch_sharding, shape)
                for name, (shape, dtype) in self._global_shapes().items()}


def as_batch(data) -> dict:
    """A dataset's output as a batch dict: a bare array is {"x": array}."""
    return data if isinstance(data, dict) else {"x": data}


def image_data_shape(config) -> tuple[int, int, int]:
    """(H, W, C) of an image dataset's batches, from the config alone (so that --mode=compile
    needs no data): data.resolution square images with data.channels channels. The stream
    checks, when it opens the data, that they match."""
    data = config.data
    if not (isinstance(data.resolution, int) and data.resolution > 0):
        raise ConfigError(f"data.resolution={data.resolution!r}: an image dataset needs the image size, e.g. "
                          f"data.resolution=32 for CIFAR-10 (images of another size are centre-cropped and resized)")
    if data.channels not in (1, 3):
        raise ConfigError(f"data.channels={data.channels!r} must be 1 (grey) or 3 (RGB)")
    value_range(data)  # ConfigError unless lo < hi
    return (data.resolution, data.resolution, data.channels)


def build_experiment(config, devices=None) -> Experiment:
    """Validate `config` and build its experiment; raises ConfigError naming what is wrong.

    Every field is checked here, before anything is written or compiled (see the module
    docstring for how)."""
    _check_fields(config)
    factory.lookup(factory.PARAMETRIZATIONS, config.model.output, "model.output")

    dataset_fn = factory.build_dataset(config)
    process = factory.build_process(config)
    network = factory.build_network(config)
    objective = factory.build_objective(config)
    factory.lookup(factory.SAMPLERS, config.sampling.sampler, "sampling.sampler")
    factory.build_sampler(config, config.sampling.sampler)
    for name in evaluation_samplers(config):
        factory.build_sampler(config, name)
    factory.check_kwargs(log_likelihood, config.evaluate.likelihood, "evaluate.likelihood",
                         ("process", "model", "x", "key", "condition", "first_index", "throw", "terminal_log_prob"))

    training = config.training
    k = training.steps_per_dispatch
    for path in ("num_steps", "log_every", "checkpoint_every", "sync_every"):
        if training[path] % k:
            raise ConfigError(f"training.{path}={training[path]} must be a multiple of training.steps_per_dispatch={k}")
    axes = {name: size for name, size in config.mesh.items() if name != "num_slices"}
    try:
        mesh = parallel.make_mesh(axes, devices, num_slices=config.mesh.num_slices)
    except ValueError as error:
        raise ConfigError(f"mesh: {error}") from None
    factory.build_sharding_rule(config, mesh)
    parallel_size = parallel.data_parallel_size(mesh)
    if training.batch_size % (parallel_size * training.grad_accum_steps):
        accum = f" x {training.grad_accum_steps} micro-batches" if training.grad_accum_steps > 1 else ""
        raise ConfigError(
            f"training.batch_size={training.batch_size} does not divide over the {parallel_size} devices of the "
            f"mesh's data-parallel axes{accum}; use a multiple of {parallel_size * training.grad_accum_steps}"
        )
    if training.batch_size % jax.process_count():
        raise ConfigError(f"training.batch_size must divide over {jax.process_count()} processes")
    image_dataset = dataset_fn if isinstance(dataset_fn, ImageDataset) else None
    if image_dataset is None and training.batch_size > config.data.num_train_examples:
        raise ConfigError(
            f"training.batch_size={training.batch_size} exceeds data.num_train_examples={config.data.num_train_examples}"
        )

    optimizer = make_optimizer(total_steps=training.num_steps, **factory.check_kwargs(
        make_optimizer, config.optimizer, "optimizer", ("total_steps",)))
    num_classes = config.model.num_classes
    if image_dataset is not None:
        data_shape, labelled = image_data_shape(config), bool(config.data.label_key)
    else:
        example = as_batch(jax.eval_shape(lambda k: dataset_fn(k, 1), jax.random.key(0)))
        data_shape, labelled = tuple(example["x"].shape[1:]), "label" in example
    if num_classes and not labelled:
        raise ConfigError(f"model.num_classes={num_classes} makes the model class-conditional, and data.name="
                          f"{config.data.name!r} has no labels; set model.num_classes=0 or use a labelled dataset")
    _check_options_by_tracing(config, process, objective, data_shape)
    _check_guidance(config, process)
    _check_inception(config, image_dataset)
    experiment = Experiment(config, process, network, dataset_fn, objective, optimizer, mesh, data_shape,
                            image_dataset)
    try:
        experiment.state_shapes
    except (ValueError, TypeError, ArithmeticError) as error:
        raise factory.option_error("model.kwargs", dict(config.model.kwargs), error) from None
    return experiment
