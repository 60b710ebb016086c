"""Denoising score matching is minimised by the exact score (checked on a Gaussian, whose
diffused density is known in closed form), and training drives the loss down."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.data.gaussian_mixture import GaussianMixture, perturbed_score_fn
from genjax.experiment import build_experiment
from genjax.objectives import denoising_score_matching_loss
from genjax.processes import VPSDE
from genjax.samplers import sample_reverse_sde
from tests.tiny_config import tiny_config

PROCESS = VPSDE()
GAUSSIAN = GaussianMixture(
    weights=jnp.array([1.0]),
    means=jnp.array([[1.0, -0.5]]),
    covariances=jnp.array([[[0.6, 0.2], [0.2, 0.3]]]),
)


def expected_sigma_squared() -> float:
    """E_t[sigma(t)^2] for t ~ U(t_min_train, T), by fine quadrature."""
    t = np.linspace(PROCESS.t_min_train, PROCESS.t_max, 200_001)
    _, sigma = PROCESS.marginal_coefficients(jnp.asarray(t))
    return float(np.trapezoid(np.asarray(sigma, np.float64) ** 2, t) / (t[-1] - t[0]))


@pytest.fixture(scope="module")
def loss_differences():
    """DSM(exact + delta) - DSM(exact) on common random numbers, for 24 independent keys."""
    exact = perturbed_score_fn(GAUSSIAN, PROCESS)
    delta = jnp.array([0.3, -0.2])

    @jax.jit
    def difference(key):
        key_data, key_loss = jax.random.split(key)
        x0 = GAUSSIAN.sample(key_data, 20_000)
        keys = jax.random.split(key_loss, 20_000)
        base = denoising_score_matching_loss(exact, PROCESS, x0, keys)
        shifted = denoising_score_matching_loss(lambda x, t: exact(x, t) + delta, PROCESS, x0, keys)
        return base, shifted - base

    out = [difference(jax.random.key(i)) for i in range(24)]
    return np.array([o[0] for o in out]), np.array([o[1] for o in out]), delta


def test_exact_score_has_lower_dsm_loss_than_any_perturbation(loss_differences):
    _, differences, _ = loss_differences
    assert np.all(differences > 0), differences


def test_dsm_excess_equals_weighted_squared_perturbation(loss_differences):
    """DSM = explicit score matching + const, so adding delta raises the (dimension-averaged)
    loss by E_t[sigma^2] |delta|^2 / D; checked within 4 Monte Carlo standard errors."""
    _, differences, delta = loss_differences
    expected = expected_sigma_squared() * float(jnp.sum(delta**2)) / 2
    standard_error = differences.std(ddof=1) / np.sqrt(len(differences))
    assert abs(differences.mean() - expected) < 4 * standard_error + 1e-6, (differences.mean(), expected)
    assert standard_error < 0.05 * expected  # the check is sharp enough to mean something


def test_exact_score_loss_is_the_irreducible_minimum(loss_differences):
    """At the exact score the loss is E[sigma^2 |s - grad log p_0t|^2] / D, which is well
    below the value 1 of a model that predicts zero noise."""
    base, _, _ = loss_differences
    assert 0.05 < base.mean() < 0.9


def test_dsm_sum_reduction_is_dimension_times_mean():
    score = perturbed_score_fn(GAUSSIAN, PROCESS)

    @jax.jit  # one program for both reductions (eagerly, each of the loss's operations compiles its own)
    def both(key):
        x0 = GAUSSIAN.sample(key, 512)
        keys = jax.random.split(jax.random.fold_in(key, 1), 512)
        return tuple(denoising_score_matching_loss(score, PROCESS, x0, keys, reduce=r) for r in ("mean", "sum"))

    mean, total = both(jax.random.key(0))
    np.testing.assert_allclose(total, 2 * mean, rtol=1e-6)
    x0 = np.zeros((4, 2), np.float32)
    key = jax.random.split(jax.random.key(1), 4)
    with pytest.raises(ValueError, match="valid|choose"):
        denoising_score_matching_loss(score, PROCESS, x0, key, weighting="not_a_weighting")


def train_losses(experiment, num_steps):
    """(final state, per-step losses) of num_steps jitted steps from a fresh state."""
    step = experiment.jitted_train_step()
    stream = experiment.train_stream()
    state = experiment.init_state()
    losses = []
    for i in range(num_steps):
        state, metrics = step(state, experiment.global_batch(stream, i))
        losses.append(metrics["loss"])
        if i % 10 == 0:
            metrics["loss"].block_until_ready()
    return state, np.asarray(jax.device_get(losses))


def test_training_drives_the_loss_down():
    config = tiny_config(batch_size=256)
    config.model.kwargs.hidden_dim = 64
    _, losses = train_losses(build_experiment(config, jax.devices()[:1]), 300)
    assert np.isfinite(losses).all()
    # The output layer starts at zero, so step 0 scores E|eps|^2 / D = 1 (std 1/16 at this batch).
    assert 0.8 < losses[0] < 1.2
    assert losses[-50:].mean() < 0.75 * losses[0], (losses[0], losses[-50:].mean())


@pytest.mark.parametrize("process, output, weighting", [("ve", "noise", "sigma_squared"),
                                                        ("subvp", "noise", "likelihood"),
                                                        ("edm", "edm", "edm")])
def test_every_process_trains_through_the_engine(process, output, weighting):
    """Each process, parametrization and weighting composes through the factory, and the
    loss falls (medians: the likelihood weighting's estimate is heavy-tailed)."""
    config = tiny_config(batch_size=256)
    config.model.kwargs.hidden_dim = 64
    config.process.name = process
    config.process.kwargs = {}
    config.model.output = output
    config.objective.kwargs.weighting = weighting
    if weighting == "likelihood":
        config.objective.kwargs.importance_sampling = True
    experiment = build_experiment(config, jax.devices()[:1])
    state, losses = train_losses(experiment, 150)
    assert np.isfinite(losses).all()
    assert np.median(losses[-30:]) < 0.8 * np.median(losses[:10]), (losses[:10], losses[-30:])
    # The trained model samples under jit with the process's prior (traced inside the solve).
    draw = jax.jit(lambda params, key: sample_reverse_sde(experiment.process, experiment.model(params), key, 16,
                                                          experiment.data_shape, 5))
    assert np.isfinite(np.asarray(draw(state.ema_params, jax.random.key(0)).samples)).all()
