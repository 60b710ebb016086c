"""The EMA of the parameters, with and without EDM's half-life warm-up."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genjax.train.state import create_train_state, ema_decay_at
from genjax.train.step import train_step


def test_without_warm_up_the_decay_is_constant():
    for step in (0, 1, 10_000):
        assert float(ema_decay_at(jnp.int32(step), 0.999)) == pytest.approx(0.999, abs=1e-7)


def test_warm_up_equals_edms_rule_in_images():
    """EDM (training_loop.py): after cur_nimg images, half-life min(500k, 0.05 cur_nimg) images and
    beta = 0.5 ** (batch / half-life); at batch 512 the configured decay is 0.5 ** (512 / 500k)."""
    batch, half_life_images, ratio = 512, 500_000, 0.05
    decay = 0.5 ** (batch / half_life_images)
    for steps_taken in (1, 2, 10, 1_000, 19_531, 19_532, 100_000):
        images = steps_taken * batch
        expected = 0.5 ** (batch / min(half_life_images, images * ratio))
        got = float(ema_decay_at(jnp.int32(steps_taken - 1), decay, ratio))
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-9), steps_taken
    # The first update forgets the initial weights almost entirely (half-life 0.05 steps).
    assert float(ema_decay_at(jnp.int32(0), decay, ratio)) < 1e-5


def test_train_step_applies_the_warmed_up_decay():
    params = {"w": jnp.zeros((3,))}
    optimizer = optax.sgd(1.0)
    state = create_train_state(params, optimizer, jax.random.key_data(jax.random.key(0)))

    def loss_fn(params, batch, keys):  # gradient -1 on every weight: w grows by 1 per step
        return -jnp.sum(params["w"]) + 0.0 * jnp.sum(batch["x"])

    batch = {"x": jnp.zeros((2, 1))}
    ema, decay, ratio = np.zeros(3), 0.99, 0.5
    for step in range(4):
        state, _ = train_step(state, batch, loss_fn=loss_fn, optimizer=optimizer, ema_decay=decay,
                              ema_rampup_ratio=ratio)
        beta = 0.5 ** (1.0 / min(np.log(0.5) / np.log(decay), ratio * (step + 1)))
        ema = beta * ema + (1.0 - beta) * (step + 1.0)
        np.testing.assert_allclose(np.asarray(state.ema_params["w"]), ema, rtol=1e-6)
