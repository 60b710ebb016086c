"""DSM (every process x weighting) and sliced score matching are minimised by the exact score.

DSM equals explicit score matching plus a constant, so adding a perturbation
delta(x, t) = c(t) delta_0 to the exact score raises the expected loss by
E_t[lambda(t) c(t)^2] |delta_0|^2 / D ("mean" reduction), with lambda the weighting on the
score and the expectation over the loss's own t distribution, computed here by quadrature.
c(t) = 1 (a constant error in the score) except for the EDM weighting, where the error is a
constant delta_0 on EDM's raw network output F (c = alpha c_out(sigma~) / sigma^2), whose
weighted size is exactly |delta_0|^2 since lambda(sigma~) c_out^2 = 1. Each check uses common
random numbers (the same draws for exact and perturbed) and 16 independent keys, and allows
4 standard errors, as tests/test_score_matching.py does. Data: one 2-D Gaussian, whose
diffused score is exact at every t.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from genjax.data.gaussian_mixture import GaussianMixture, make_gaussian_mixture, perturbed_score_fn
from genjax.nets.preconditioning import c_out, edm_loss_weight
from genjax.objectives import (
    denoising_score_matching_loss,
    likelihood_proposal_normaliser,
    sample_likelihood_proposal_time,
    sliced_score_matching_loss,
)
from genjax.objectives.score_matching import log_sigma_tilde_squared
from genjax.processes import EDMProcess, SubVPSDE, VESDE, VPSDE

PROCESSES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(), "edm": EDMProcess()}
GAUSSIAN = GaussianMixture(
    weights=jnp.array([1.0]),
    means=jnp.array([[1.0, -0.5]]),
    covariances=jnp.array([[[0.6, 0.2], [0.2, 0.3]]]),
)
DELTA = jnp.array([0.3, -0.2])
NUM_KEYS, BATCH = 16, 16_384
SIGMA_DATA = 0.5


def perturbation_scale(process, weighting, t):
    """c(t): the perturbation is c(t) DELTA in score units."""
    if weighting != "edm":
        return jnp.ones_like(t)
    alpha, sigma = process.marginal_coefficients(t)
    return alpha * c_out(sigma / alpha, SIGMA_DATA) / sigma**2


def score_weight(process, weighting, t):
    """lambda(t) on || s - grad log p_0t ||^2."""
    alpha, sigma = process.marginal_coefficients(t)
    if weighting == "sigma_squared":
        return sigma**2
    if weighting == "likelihood":
        return process.diffusion(t) ** 2
    return edm_loss_weight(sigma / alpha, SIGMA_DATA) * sigma**4 / alpha**2


def time_quadrature(process, weighting):
    """Nodes and weights of E_t[.] for the loss's t distribution (without importance sampling)."""
    if weighting != "likelihood" and isinstance(process, EDMProcess):  # log-normal sigma = t
        z = np.linspace(-9.0, 9.0, 40_001)
        w = scipy.stats.norm.pdf(z) * (z[1] - z[0])
        return np.exp(process.p_mean + process.p_std * z), w / w.sum()
    # Uniform on [t_min_train, T]: trapezoid on a grid that is fine in log t near t_min.
    t = np.unique(np.concatenate([np.geomspace(process.t_min_train, process.t_max, 100_001),
                                  np.linspace(process.t_min_train, process.t_max, 100_001)]))
    w = np.zeros_like(t)
    w[1:] += 0.5 * np.diff(t)
    w[:-1] += 0.5 * np.diff(t)
    return t, w / (t[-1] - t[0])


def expectation(process, weighting, fn):
    t, w = time_quadrature(process, weighting)
    values = np.asarray(jax.jit(jax.vmap(fn))(jnp.asarray(t, jnp.float32)), np.float64)
    return float(np.sum(w * values))


def expected_excess(process, weighting):
    fn = lambda t: score_weight(process, weighting, t) * perturbation_scale(process, weighting, t) ** 2
    return expectation(process, weighting, fn) * float(jnp.sum(DELTA**2)) / 2


def expected_exact_loss(process, weighting):
    """E_t[lambda (D / sigma^2 - tr C_t^{-1})] / D: the loss at the exact score, since
    E|grad log p_0t|^2 = D / sigma^2 and E|grad log p_t|^2 = tr C_t^{-1}, C_t = alpha^2 Sigma + sigma^2 I."""
    cov = GAUSSIAN.covariances[0]

    def fn(t):
        alpha, sigma = process.marginal_coefficients(t)
        fisher = jnp.trace(jnp.linalg.inv(alpha**2 * cov + sigma**2 * jnp.eye(2)))
        return score_weight(process, weighting, t) * (2.0 / sigma**2 - fisher) / 2

    return expectation(process, weighting, fn)


def gaussian_score_fn(process):
    """The exact score -C_t^{-1} (x - alpha mu) of the diffused Gaussian (a cheap closed form of
    perturbed_score_fn(GAUSSIAN, process), which test_gaussian_score_is_the_mixture_score checks)."""
    mean, cov = GAUSSIAN.means[0], GAUSSIAN.covariances[0]

    def score(x, t):
        alpha, sigma = process.marginal_coefficients(t)
        c = alpha**2 * cov + sigma**2 * jnp.eye(2)
        det = c[0, 0] * c[1, 1] - c[0, 1] * c[1, 0]
        inverse = jnp.array([[c[1, 1], -c[0, 1]], [-c[1, 0], c[0, 0]]]) / det
        return -inverse @ (x - alpha * mean)

    return score


@pytest.mark.parametrize("name", ["vp", "edm"])
def test_gaussian_score_is_the_mixture_score(name):
    process = PROCESSES[name]
    x = jnp.array([0.4, -1.2])
    for t in (0.01, 0.3, 1.0):
        t = jnp.float32(t * process.t_max)
        np.testing.assert_allclose(
            gaussian_score_fn(process)(x, t), perturbed_score_fn(GAUSSIAN, process)(x, t), rtol=1e-4, atol=1e-6
        )


def loss_samples(process, weighting, importance_sampling=False):
    """(DSM(exact), DSM(exact + c(t) DELTA) - DSM(exact)) for NUM_KEYS keys on common random numbers."""
    exact = gaussian_score_fn(process)
    perturbed = lambda x, t: exact(x, t) + perturbation_scale(process, weighting, t) * DELTA
    options = dict(weighting=weighting, importance_sampling=importance_sampling, sigma_data=SIGMA_DATA)

    @jax.jit
    @jax.vmap
    def difference(key):
        key_data, key_loss = jax.random.split(key)
        x0 = GAUSSIAN.sample(key_data, BATCH)
        keys = jax.random.split(key_loss, BATCH)
        base = denoising_score_matching_loss(exact, process, x0, keys, **options)
        shifted = denoising_score_matching_loss(perturbed, process, x0, keys, **options)
        return base, shifted - base

    base, diff = difference(jax.random.split(jax.random.key(11), NUM_KEYS))
    return np.asarray(base, np.float64), np.asarray(diff, np.float64)


def within(samples, expected, z=4.0):
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    return abs(samples.mean() - expected) < z * se + 1e-6 * abs(expected), (samples.mean(), expected, se)


# Every weighting on VP and one per other process run by default; the rest are marked slow.
FAST_CASES = {("vp", "sigma_squared"), ("vp", "likelihood"), ("vp", "edm"), ("subvp", "likelihood"),
              ("ve", "sigma_squared"), ("edm", "edm")}
CASES = [
    pytest.param(p, w, marks=() if (p, w) in FAST_CASES else pytest.mark.slow)
    for p in PROCESSES
    for w in ("sigma_squared", "likelihood", "edm")
]


@pytest.mark.parametrize("name,weighting", CASES)
def test_dsm_excess_equals_weighted_squared_perturbation(name, weighting):
    process = PROCESSES[name]
    base, diff = loss_samples(process, weighting)
    expected = expected_excess(process, weighting)
    assert np.all(diff > 0)
    ok, info = within(diff, expected)
    assert ok, info
    assert info[2] < 0.05 * expected, info  # sharp enough to mean something
    ok, info = within(base, expected_exact_loss(process, weighting))
    assert ok, info


@pytest.mark.parametrize("name", ["vp"] + [pytest.param(p, marks=pytest.mark.slow) for p in ("subvp", "ve", "edm")])
def test_likelihood_importance_sampling_keeps_expectation_and_lowers_variance(name):
    process = PROCESSES[name]
    base_is, diff_is = loss_samples(process, "likelihood", importance_sampling=True)
    base, _ = loss_samples(process, "likelihood")
    expected_base = expected_exact_loss(process, "likelihood")
    # Same expectation: the DSM identity and the exact-score loss hold under the proposal too.
    ok, info = within(diff_is, expected_excess(process, "likelihood"))
    assert ok, info
    ok, info = within(base_is, expected_base)
    assert ok, info
    ok, info = within(base, expected_base)
    assert ok, info
    assert base_is.std(ddof=1) < base.std(ddof=1), (base_is.std(), base.std())


@pytest.mark.parametrize("name", list(PROCESSES))
def test_likelihood_proposal_is_g_squared_over_sigma_squared(name):
    """d/dt log(sigma^2 / alpha^2) = g^2 / sigma^2, and the sampled t follow its CDF."""
    process = PROCESSES[name]
    t = jnp.geomspace(max(process.t_min_train, 1e-3), process.t_max, 9)
    derivative = jax.vmap(jax.grad(lambda s: log_sigma_tilde_squared(process, s)))(t)
    _, sigma = process.marginal_coefficients(t)
    np.testing.assert_allclose(derivative, jax.vmap(process.diffusion)(t) ** 2 / sigma**2, rtol=2e-3)
    samples = jax.vmap(lambda k: sample_likelihood_proposal_time(process, k))(jax.random.split(jax.random.key(0), 20_000))
    assert float(samples.min()) >= process.t_min_train and float(samples.max()) <= process.t_max
    lo = log_sigma_tilde_squared(process, jnp.float32(process.t_min_train))
    normaliser = likelihood_proposal_normaliser(process)

    def cdf(s):
        return np.asarray((log_sigma_tilde_squared(process, jnp.asarray(s, jnp.float32)) - lo) / normaliser, np.float64)

    assert scipy.stats.kstest(np.asarray(samples, np.float64), cdf).pvalue > 1e-3


def test_dsm_rejects_bad_options():
    x0, keys = jnp.zeros((4, 2)), jax.random.split(jax.random.key(0), 4)
    score = perturbed_score_fn(GAUSSIAN, VPSDE())
    with pytest.raises(ValueError, match="choose"):
        denoising_score_matching_loss(score, VPSDE(), x0, keys, weighting="unknown")
    with pytest.raises(ValueError, match="likelihood"):
        denoising_score_matching_loss(score, VPSDE(), x0, keys, importance_sampling=True)


# --- sliced score matching --------------------------------------------------------------------
MIXTURE = make_gaussian_mixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]], [0.4, 0.6])
A = jnp.array([[0.3, -0.1], [0.2, 0.15]])
PERTURBATIONS = {
    "constant": lambda x: DELTA,
    "linear": lambda x: A @ x,
    "nonlinear": lambda x: 0.3 * jnp.tanh(x[::-1]) + 0.1 * x,
}


@pytest.fixture(scope="module")
def sliced_samples():
    """Per key: SSM(exact), and for each perturbation h, SSM(exact + h) - SSM(exact) and the
    explicit score-matching excess |h|^2 / 2, all on the same x and projections; also the
    explicit objective -|grad log p|^2 / 2 at the exact score."""

    @jax.jit
    @jax.vmap
    def one_key(key):
        key_x, key_v = jax.random.split(key)
        x = MIXTURE.sample(key_x, BATCH)
        keys = jax.random.split(key_v, BATCH)
        out = {}
        for vr in (True, False):
            for projection in ("gaussian", "rademacher"):
                loss = lambda fn: sliced_score_matching_loss(
                    fn, x, keys, num_projections=2, variance_reduction=vr, projection=projection
                )
                base = loss(MIXTURE.score)
                out[f"{vr}-{projection}-base"] = base
                for name, h in PERTURBATIONS.items():
                    out[f"{vr}-{projection}-{name}"] = loss(lambda y, h=h: MIXTURE.score(y) + h(y)) - base
        scores = jax.vmap(MIXTURE.score)(x)
        out["explicit"] = -0.5 * jnp.mean(jnp.sum(scores**2, -1))
        for name, h in PERTURBATIONS.items():
            out[f"esm-{name}"] = 0.5 * jnp.mean(jnp.sum(jax.vmap(h)(x) ** 2, -1))
        return out

    out = one_key(jax.random.split(jax.random.key(3), NUM_KEYS))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


@pytest.mark.parametrize("vr", [True, False])
@pytest.mark.parametrize("projection", ["gaussian", "rademacher"])
def test_sliced_score_matching_is_minimised_by_exact_score(sliced_samples, vr, projection):
    for name in PERTURBATIONS:
        diff = sliced_samples[f"{vr}-{projection}-{name}"]
        assert diff.mean() > 0, name
        # SSM(s* + h) - SSM(s*) = E|h|^2 / 2 (explicit score matching up to a constant).
        ok, info = within(diff - sliced_samples[f"esm-{name}"], 0.0)
        assert ok, (name, info)
    # At the exact score SSM equals the explicit objective E[tr grad s + |s|^2 / 2] = -E|s*|^2 / 2.
    ok, info = within(sliced_samples[f"{vr}-{projection}-base"] - sliced_samples["explicit"], 0.0)
    assert ok, info
    assert sliced_samples[f"{vr}-{projection}-base"].std() < 0.1 * abs(sliced_samples["explicit"].mean())
