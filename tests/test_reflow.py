"""Reflow against exact mathematics.

For a Gaussian source N(0, I) and a Gaussian target N(m, S), the 1-rectified flow (the
marginal velocity of the linear path under the independent coupling) is exact
(`gaussian_mixture.perturbed_velocity_fn` with one component), and its ODE map is affine,
x_0 = A x_1 + m with A a function of S (symmetric positive definite). Pairs (x_1, x_0) drawn
with that ODE are then a straight coupling: the lines x_t = (1 - t) x_0 + t x_1 never cross,
so u = x_1 - x_0 is a function of (x_t, t) and the irreducible CFM loss
E |u - E[u | x_t, t]|^2, the straightness defect of the coupling, is zero. Under a
Gaussian joint law E[u | x_t] is affine in x_t, so a least-squares fit per t measures the
defect exactly (up to sampling error). Independent pairs with the same marginals have a
large defect. The given-pairs coupling trains on the batch's "source" array.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.evaluate.reflow import draw_pairs, straightness
from genjax.data.gaussian_mixture import make_gaussian_mixture, perturbed_velocity_fn
from genjax.objectives.flow_matching import conditional_flow_matching_loss
from genjax.processes import views
from genjax.processes.flow_matching import FlowMatchingPath

TARGET = make_gaussian_mixture(np.array([1.0]), np.array([[2.0, -1.0]]), np.array([0.5]))
PROCESS = FlowMatchingPath()


def coupling_defect(x0, x1, times=(0.1, 0.3, 0.5, 0.7, 0.9)):
    """E |u - E[u | x_t]|^2 / E |u|^2 with E[u | x_t] fitted affinely per t."""
    x0, x1 = np.asarray(x0, np.float64), np.asarray(x1, np.float64)
    u = x1 - x0
    residuals = []
    for t in times:
        design = np.concatenate([(1 - t) * x0 + t * x1, np.ones((len(x0), 1))], axis=1)
        coefficients, *_ = np.linalg.lstsq(design, u, rcond=None)
        residuals.append(np.mean(np.sum((u - design @ coefficients) ** 2, -1)))
    return float(np.mean(residuals) / np.mean(np.sum(u**2, -1)))


@pytest.fixture(scope="module")
def exact_pairs():
    model = views.Model.from_per_example(perturbed_velocity_fn(TARGET, PROCESS), "velocity")
    x1 = jax.random.normal(jax.random.key(0), (2000, 2))
    x0, x1, nfe = draw_pairs(PROCESS, model, x1, tolerance=1e-6)
    return x0, x1, nfe


def test_reflow_pairs_of_the_exact_flow_are_a_straight_coupling(exact_pairs):
    x0, x1, _ = exact_pairs
    # the pairs carry the target: mean and covariance within 5 standard errors of N(m, 0.25 I)
    assert np.all(np.abs(x0.mean(0) - [2.0, -1.0]) < 5 * 0.5 / np.sqrt(len(x0)))
    np.testing.assert_allclose(np.cov(x0.T), 0.25 * np.eye(2), atol=5 * 0.25 * np.sqrt(2 / len(x0)))
    assert coupling_defect(x0, x1) < 1e-6
    shuffled = x1[np.random.default_rng(0).permutation(len(x1))]
    assert coupling_defect(x0, shuffled) > 0.1  # independent pairs: crossing lines


def test_straightness_of_the_two_rectified_field_is_zero(exact_pairs):
    """The ODE map of the exact flow is x_0 = a x_1 + m with a = 0.5 (isotropic S), so along
    each line x_t = ((1 - t) a + t) x_1 + (1 - t) m the 2-rectified velocity is constant,
    v = (1 - a) x_1 - m: its straightness is 0, the 1-rectified flow's is not."""
    x0, x1, _ = exact_pairs
    a = 0.5
    np.testing.assert_allclose(x0, a * x1 + np.array([2.0, -1.0]), atol=1e-4)  # the affine ODE map

    def two_rectified(x, t):
        source = (x - (1 - t) * jnp.array([2.0, -1.0])) / ((1 - t) * a + t)
        return (1 - a) * source - jnp.array([2.0, -1.0])

    one_rectified = views.velocity_fn(PROCESS, views.Model.from_per_example(perturbed_velocity_fn(TARGET, PROCESS),
                                                                             "velocity"))
    draws = jax.random.normal(jax.random.key(3), (256, 2))
    assert straightness(two_rectified, draws) < 1e-8
    assert straightness(one_rectified, draws) > 0.1


def test_given_pairs_coupling_trains_on_the_batch_source():
    process = FlowMatchingPath(coupling="given_pairs")
    model = views.Model.from_per_example(lambda x, t: jnp.zeros_like(x), "velocity")
    x0 = jnp.ones((8, 2))
    source = jnp.full((8, 2), 3.0)
    keys = jax.random.split(jax.random.key(0), 8)
    loss = conditional_flow_matching_loss(model, process, {"x": x0, "source": source}, keys)
    np.testing.assert_allclose(float(loss), 4.0, rtol=1e-6)  # |u|^2 / D with u = x1 - x0 = 2 per coordinate
    with pytest.raises(ValueError, match="'source'"):
        conditional_flow_matching_loss(model, process, {"x": x0}, keys)
    assert not process.has_score


def test_given_pairs_config_builds_and_its_loss_reads_the_source():
    from configs import flow_matching
    from genjax.experiment import build_experiment

    config = flow_matching.get_config()
    config.process.kwargs.coupling = "given_pairs"
    experiment = build_experiment(config)
    params = experiment.init_state().params
    x0 = jnp.zeros((4, 2))
    keys = jax.random.split(jax.random.key(0), 4)
    near = experiment.loss_fn(params, {"x": x0, "source": jnp.zeros((4, 2))}, keys)
    far = experiment.loss_fn(params, {"x": x0, "source": jnp.full((4, 2), 10.0)}, keys)
    assert float(far) > float(near) + 10.0  # the target velocity is the given source minus x0
