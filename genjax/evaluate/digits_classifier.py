"""An offline image-quality measure for the 8x8 digits: a small network trained on the digits train
split in seconds, needing no downloaded weights.

- `frechet_digits_distance`: the Frechet distance (frechet.py) between the Gaussian fits of the
  classifier's penultimate-layer features of the samples and of the held-out test split, the
  FID recipe (Heusel et al. 2017) with this classifier in place of Inception-v3.
- `class_accuracy`: the fraction of class-conditional samples that the classifier assigns to the
  class they were drawn for (does the model draw the digit it was asked for?).

Images are pixels on the 0..255 scale, [B, 8, 8, 1] (uint8 or float; model samples in
[lo, hi] map there by `image_grid.to_uint8(samples, value_range)`). The splits are the digits
builder's (`digits_builder.split_indices`: 1,437 train, 360 test), read straight from
scikit-learn's arrays. Training is deterministic given the seed (same data order, same init).
"""
from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from genjax.evaluate import frechet

FEATURE_DIM = 128
NUM_CLASSES = 10
DEFAULT_STEPS = 400
DEFAULT_BATCH_SIZE = 128
DEFAULT_LEARNING_RATE = 2e-3


class DigitsClassifier(nn.Module):
    """Flattened pixels -> dense 256 -> dense FEATURE_DIM (the features) -> dense 10, ReLUs.

    Dense layers rather than convolutions: on 64-pixel images they reach the same test
    accuracy (~98%), and XLA:CPU trains them in seconds where the weight gradients of small
    convolutions take minutes."""

    @nn.compact
    def __call__(self, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """pixels [B, 8, 8, 1] on 0..255 -> (features [B, FEATURE_DIM], logits [B, 10])."""
        x = jnp.asarray(pixels, jnp.float32).reshape(pixels.shape[0], -1) / 127.5 - 1.0
        x = nn.relu(nn.Dense(256)(x))
        features = nn.relu(nn.Dense(FEATURE_DIM)(x))
        return features, nn.Dense(NUM_CLASSES)(features)


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 [n, 8, 8, 1], labels int32 [n]) of the digits builder's 'train' or 'test' split."""
    from genjax.data.images.digits_builder import digits_uint8, split_indices

    images, labels = digits_uint8()
    index = split_indices(len(images))[split]
    return images[index], labels[index].astype(np.int32)


def train_classifier(key: jax.Array, images: np.ndarray, labels: np.ndarray, steps: int = DEFAULT_STEPS,
                     batch_size: int = DEFAULT_BATCH_SIZE, learning_rate: float = DEFAULT_LEARNING_RATE) -> Any:
    """Parameters of DigitsClassifier after `steps` Adam steps of softmax cross-entropy on
    minibatches drawn with replacement (key fixes the init and the batches)."""
    model = DigitsClassifier()
    init_key, data_key = jax.random.split(key)
    params = model.init(init_key, jnp.zeros((1,) + images.shape[1:]))["params"]
    optimizer = optax.adam(learning_rate)
    images, labels = jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)

    def loss(params, batch_images, batch_labels):
        _, logits = model.apply({"params": params}, batch_images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch_labels).mean()

    def step(carry, step_key):
        params, opt_state = carry
        index = jax.random.randint(step_key, (batch_size,), 0, images.shape[0])
        grads = jax.grad(loss)(params, images[index], labels[index])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    @jax.jit
    def run(params):
        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(data_key, steps))
        return params

    return run(params)


@jax.jit
def _apply(params, pixels):
    return DigitsClassifier().apply({"params": params}, pixels)


def _batched(params, pixels, batch_size: int = 1024):
    pixels = np.asarray(pixels)
    outputs = [_apply(params, jnp.asarray(pixels[i:i + batch_size], jnp.float32))
               for i in range(0, len(pixels), batch_size)]
    return (np.concatenate([np.asarray(o[0]) for o in outputs]), np.concatenate([np.asarray(o[1]) for o in outputs]))


def features(params, pixels) -> np.ndarray:
    """Penultimate-layer features [B, FEATURE_DIM] of pixels [B, 8, 8, 1] on 0..255."""
    return _batched(params, pixels)[0]


def predict(params, pixels) -> np.ndarray:
    """Predicted classes [B] of pixels [B, 8, 8, 1] on 0..255."""
    return _batched(params, pixels)[1].argmax(-1)


def class_accuracy(params, pixels, labels) -> float:
    """Fraction of images whose predicted class is the given label (for class-conditional
    samples: the class each was drawn for)."""
    return float(np.mean(predict(params, pixels) == np.asarray(labels)))


def frechet_digits_distance(params, pixels, reference_pixels) -> float:
    """Frechet distance between the classifier features of pixels and of reference_pixels
    (by default the test split: `digits_split('test')[0]`)."""
    return frechet.frechet_distance_of_features(features(params, pixels), features(params, reference_pixels))


def sample_quality(params, pixels, labels=None, reference_pixels=None) -> dict[str, float]:
    """{'digits_frechet': Frechet distance of the samples' features to the test split's (or
    reference_pixels'), 'digits_class_accuracy': accuracy against the classes the samples were
    drawn for (only when labels are given)}."""
    reference = digits_split("test")[0] if reference_pixels is None else reference_pixels
    result = {"digits_frechet": frechet_digits_distance(params, pixels, reference)}
    if labels is not None:
        result["digits_class_accuracy"] = class_accuracy(params, pixels, labels)
    return result


def real_digits_floor(params, num: int, seed: int, draws: int = 5) -> dict:
    """The measure's floor at a sample-set size: the Frechet distance to the test split of `num`
    real training digits (the statistic is biased by the sample size, so the floor is taken at
    the samples' count), median of `draws` random subsets, each listed."""
    train, test = digits_split("train")[0], digits_split("test")[0]
    rng = np.random.default_rng([seed, 0x4469676974])
    size = min(num, len(train))
    runs = [frechet_digits_distance(params, train[rng.choice(len(train), size, replace=False)], test)
            for _ in range(draws)]
    return {"digits_frechet": float(np.median(runs)), "digits_frechet_runs": [float(v) for v in runs]}


# --- cached classifier -----------------------------------------------------------------------------

def _fingerprint(seed: int, steps: int) -> dict:
    return {"model": "DigitsClassifier-v1", "seed": int(seed), "steps": int(steps), "data": "sklearn-digits-train"}


def load_or_train(path: str, seed: int = 0, steps: int = DEFAULT_STEPS) -> Any:
    """The classifier trained with (seed, steps), read from the .npz at `path` if it holds
    that classifier, else trained on the train split and written there (atomically)."""
    fingerprint = _fingerprint(seed, steps)
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as stored:
            if json.loads(str(stored["__fingerprint__"])) == fingerprint:
                flat = {tuple(k.split("/")): jnp.asarray(stored[k]) for k in stored.files if k != "__fingerprint__"}
                return traverse_util.unflatten_dict(flat)
    images, labels = digits_split("train")
    params = train_classifier(jax.random.key(seed), images, labels, steps=steps)
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp.npz"
    np.savez(temporary, __fingerprint__=np.asarray(json.dumps(fingerprint, sort_keys=True)), **flat)
    os.replace(temporary, path)
    return params


def reference_numbers(seed: int = 0, steps: int = DEFAULT_STEPS) -> dict[str, float]:
    """What the measure reads on real data: test accuracy, and the Frechet distance to the test
    split of the train split (the floor a perfect model reaches with that many samples),
    of uniform noise and of the test images with their pixels shuffled."""
    train, train_labels = digits_split("train")
    test, test_labels = digits_split("test")
    params = train_classifier(jax.random.key(seed), train, train_labels, steps=steps)
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=test.shape).astype(np.uint8)
    shuffled = np.stack([rng.permutation(image.ravel()).reshape(image.shape) for image in test])
    return {"test_accuracy": class_accuracy(params, test, test_labels),
            "frechet_train_vs_test": frechet_digits_distance(params, train, test),
            "frechet_noise_vs_test": frechet_digits_distance(params, noise, test),
            "frechet_shuffled_vs_test": frechet_digits_distance(params, shuffled, test)}


if __name__ == "__main__":
    print(json.dumps(reference_numbers(), indent=1))
