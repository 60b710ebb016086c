"""Samplers against a target known in closed form.

With the exact score of a diffused 2-D Gaussian mixture (three well-separated components
of unequal weights and stds), both samplers must recover the mixture: each sample is
assigned to the nearest component mean (misassignment probability < 1e-4 at these
separations), and then

  * component weights agree within Z binomial standard errors sqrt(w (1 - w) / N);
  * per-component means within Z * std / sqrt(n_k);
  * per-component covariances within Z * std^2 sqrt(2 / n_k) (variances) and
    Z * std^2 / sqrt(n_k) (covariances), the standard errors of Gaussian sample moments;

plus, for Euler-Maruyama, a discretisation allowance. Its size is derived rather than
guessed: for a single Gaussian component N(mu, s^2 I) the exact score is linear, so the
law of the EM chain (including the N(0, I) prior and the final Tweedie denoising) is
Gaussian and is iterated exactly in float64 (`em_component_bias`). At 500 steps the
bias is ~1.2e-3 relative in the mean, under half a standard error here; the allowance is
twice it (100k-sample runs at 100 to 500 steps showed the mixture's per-component EM bias
to have the size and sign this predicts).

The probability-flow solve at rtol = atol = 1e-5 gets no allowance: a 100k-sample run
matched every component moment within 2 of its own (100k) standard errors, so any
systematic shift (e.g. from the N(0, I) prior standing in for p_T, alpha(T) = 6.6e-3) is
below ~0.4 standard errors at the sample size here.

The same checks reject a zero score and the score of a mixture with the wrong weights, so
they have power.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from genjax.data.gaussian_mixture import make_gaussian_mixture, perturbed_score_fn
from genjax.processes import VPSDE
from genjax.samplers import (
    SampleResult,
    example_keys,
    sample_prior,
    sample_probability_flow,
    sample_reverse_sde,
    solve_probability_flow,
)
from tests.counting import counting

Z = 4.5
NUM_SAMPLES = 4000
EM_STEPS = 500
SHAPE = (2,)

WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
STDS = np.array([0.5, 0.8, 0.3])

PROCESS = VPSDE()
MIXTURE = make_gaussian_mixture(WEIGHTS, MEANS, STDS)
SCORE = perturbed_score_fn(MIXTURE, PROCESS)


def marginal(t):
    """(alpha(t), sigma(t)) of the VP kernel in float64."""
    log_alpha = PROCESS.log_alpha(np.float64(t))
    return float(np.exp(log_alpha)), float(np.sqrt(-np.expm1(2.0 * log_alpha)))


def em_component_bias(mu, s, num_steps, denoise_final=True):
    """(mean - mu, var - s^2) of the EM chain's output for the single Gaussian N(mu, s^2 I),
    started from N(0, I), on the sampler's grid (exact: the chain is linear-Gaussian)."""
    t_min = PROCESS.t_min_sample
    grid = np.linspace(PROCESS.t_max, t_min, num_steps + 1)
    m, v = np.zeros_like(mu), 1.0
    for t, t_next in zip(grid[:-1], grid[1:]):
        h = t - t_next
        beta = PROCESS.beta_min + t * (PROCESS.beta_max - PROCESS.beta_min)
        alpha, sigma = marginal(t)
        var_t = alpha**2 * s**2 + sigma**2  # p_t = N(alpha mu, var_t I)
        # x' = x + h (beta x / 2 + beta (alpha mu - x) / var_t) + sqrt(beta h) z
        a = 1.0 + h * beta * (0.5 - 1.0 / var_t)
        m = a * m + h * beta * alpha * mu / var_t
        v = a * a * v + beta * h
    if denoise_final:  # Tweedie: x0_hat = (x + sigma^2 score) / alpha = x (1 - sigma^2 / var) / alpha + sigma^2 mu / var
        alpha, sigma = marginal(t_min)
        var_t = alpha**2 * s**2 + sigma**2
        a = (1.0 - sigma**2 / var_t) / alpha
        m = a * m + sigma**2 * mu / var_t
        v = a * a * v
    target_var = s**2 if denoise_final else marginal(t_min)[0] ** 2 * s**2 + marginal(t_min)[1] ** 2
    target_mean = mu if denoise_final else marginal(t_min)[0] * mu
    return m - target_mean, v - target_var


def recovery_failures(samples, t, mean_allowance=None, var_allowance=None):
    """Every check of the mixture p_t (t = 0 or t_min) the samples fail, as messages."""
    alpha, sigma = marginal(t)
    means = alpha * MEANS
    stds = np.sqrt(alpha**2 * STDS**2 + sigma**2)
    num_components = len(WEIGHTS)
    mean_allowance = np.zeros_like(MEANS) if mean_allowance is None else mean_allowance
    var_allowance = np.zeros(num_components) if var_allowance is None else var_allowance

    x = np.asarray(samples, np.float64)
    n = len(x)
    if not np.all(np.isfinite(x)):
        return ["non-finite samples"]
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    failures = []
    for k in range(num_components):
        xk = x[nearest == k]
        nk = len(xk)
        se_w = np.sqrt(WEIGHTS[k] * (1 - WEIGHTS[k]) / n)
        if abs(nk / n - WEIGHTS[k]) > Z * se_w:
            failures.append(f"weight {k}: {nk / n:.4f} vs {WEIGHTS[k]}")
        if nk < 50:
            failures.append(f"component {k}: only {nk} samples")
            continue
        s2 = stds[k] ** 2
        dm = np.abs(xk.mean(0) - means[k])
        if np.any(dm > Z * stds[k] / np.sqrt(nk) + mean_allowance[k]):
            failures.append(f"mean {k}: {xk.mean(0)} vs {means[k]}")
        cov = np.cov(xk.T)
        dvar = np.abs(np.diag(cov) - s2)
        if np.any(dvar > Z * s2 * np.sqrt(2.0 / nk) + var_allowance[k]):
            failures.append(f"variances {k}: {np.diag(cov)} vs {s2:.4f}")
        if abs(cov[0, 1]) > Z * s2 / np.sqrt(nk):
            failures.append(f"covariance {k}: {cov[0, 1]:.4f} vs 0")
    return failures


def em_allowance(num_steps):
    biases = [em_component_bias(MEANS[k], STDS[k], num_steps) for k in range(len(WEIGHTS))]
    return 2.0 * np.abs([b[0] for b in biases]), 2.0 * np.abs([b[1] for b in biases])


KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def em_result():
    sample = jax.jit(lambda key: sample_reverse_sde(PROCESS, SCORE, key, NUM_SAMPLES, SHAPE, EM_STEPS))
    return sample(KEY)


@pytest.fixture(scope="module")
def ode_result():
    sample = jax.jit(lambda key: sample_probability_flow(PROCESS, SCORE, key, NUM_SAMPLES, SHAPE))
    return sample(KEY)


# --- recovery of the mixture ---------------------------------------------------------------


def test_em_allowance_is_small():
    """The derived EM allowance is at most one standard error of each checked moment."""
    mean_allowance, var_allowance = em_allowance(EM_STEPS)
    n = NUM_SAMPLES * WEIGHTS
    assert np.all(mean_allowance < (STDS / np.sqrt(n))[:, None])
    assert np.all(var_allowance < STDS**2 * np.sqrt(2.0 / n))


def test_reverse_sde_recovers_mixture(em_result):
    assert isinstance(em_result, SampleResult)
    assert em_result.samples.shape == (NUM_SAMPLES, *SHAPE)
    mean_allowance, var_allowance = em_allowance(EM_STEPS)
    assert recovery_failures(em_result.samples, 0.0, mean_allowance, var_allowance) == []


def test_probability_flow_recovers_mixture(ode_result):
    assert ode_result.samples.shape == (NUM_SAMPLES, *SHAPE)
    assert bool(ode_result.all_successful)
    # No denoising step: the ODE ends at t_min_sample, so the target is p_{t_min}.
    assert recovery_failures(ode_result.samples, PROCESS.t_min_sample) == []


def wrong_weight_score():
    return perturbed_score_fn(make_gaussian_mixture(WEIGHTS[::-1], MEANS, STDS), PROCESS)


def zero_score(x, t):
    return jnp.zeros_like(x)


def test_reverse_sde_with_zero_score_fails():
    result = jax.jit(lambda key: sample_reverse_sde(PROCESS, zero_score, key, 2000, SHAPE, 100))(KEY)
    assert recovery_failures(result.samples, 0.0, *em_allowance(100))


def test_probability_flow_with_wrong_weights_fails():
    """A score that is exact for the right components but the wrong weights: only the
    weight checks can catch it, and they do."""
    score = wrong_weight_score()
    result = jax.jit(lambda key: sample_probability_flow(PROCESS, score, key, 2000, SHAPE))(KEY)
    failures = recovery_failures(result.samples, PROCESS.t_min_sample)
    assert any(f.startswith("weight") for f in failures), failures


def standard_normal_score(x, t):
    """Exact score of p_t when the data are N(0, I): under the VP SDE p_t = N(0, I) for all t."""
    return -x


@pytest.mark.slow  # every sampler on [4, 4, 3] examples
def test_image_shaped_examples():
    """[H, W, C] examples. For N(0, I) data the probability-flow velocity vanishes, so the
    ODE must return its prior draws; EM (here without the denoising step, so with exactly
    num_steps evaluations) must keep the variance at 1 up to its exact linear-Gaussian
    discretisation bias."""
    shape, n, steps = (4, 4, 3), 64, 100
    ode = jax.jit(lambda key: sample_probability_flow(PROCESS, standard_normal_score, key, n, shape))(KEY)
    assert ode.samples.shape == (n, *shape)
    np.testing.assert_allclose(ode.samples, sample_prior(PROCESS, example_keys(KEY, n), shape), atol=1e-5)
    em = jax.jit(
        lambda key: sample_reverse_sde(
            PROCESS, standard_normal_score, key, n, shape, steps, denoise_final=False
        )
    )(KEY)
    assert em.samples.shape == (n, *shape)
    np.testing.assert_array_equal(em.nfe, steps)
    x = np.asarray(em.samples, np.float64).ravel()
    _, var_bias = em_component_bias(np.zeros(1), 1.0, steps, denoise_final=False)
    assert abs(x.mean()) < Z / np.sqrt(x.size)
    assert abs(x.var() - 1.0) < Z * np.sqrt(2.0 / x.size) + 2.0 * abs(var_bias)


# --- per-example randomness ----------------------------------------------------------------
#
# The randomness of example i (its prior draw and its Brownian increments) is a function of
# (key, i) alone, so it is bitwise identical however the set is chunked. The float results
# are identical for equal batch shapes; across very different batch sizes XLA may pick
# different kernels (here: ~1e-6 differences in the score from batch 1024 up), which the
# Euler-Maruyama chain carries through unchanged and the adaptive ODE solve turns into
# differences of the order of its tolerance (a step accepted in one batch may be rejected in
# another). Hence the tolerances below.

CHUNK = 16
EM_FLOAT_TOL = 1e-5
ODE_FLOAT_TOL = 1e-3

draw_em_chunk = jax.jit(
    lambda key, first: sample_reverse_sde(PROCESS, SCORE, key, CHUNK, SHAPE, EM_STEPS, first_index=first)
)
draw_ode_chunk = jax.jit(
    lambda key, first: sample_probability_flow(PROCESS, SCORE, key, CHUNK, SHAPE, first_index=first)
)


def test_per_example_randomness_does_not_depend_on_chunking():
    whole = example_keys(KEY, 64)
    halves = [example_keys(KEY, 32), example_keys(KEY, 32, first_index=32)]
    data = lambda keys: np.asarray(jax.random.key_data(keys))
    np.testing.assert_array_equal(data(whole), np.concatenate([data(h) for h in halves]))
    np.testing.assert_array_equal(
        sample_prior(PROCESS, whole, SHAPE), np.concatenate([sample_prior(PROCESS, h, SHAPE) for h in halves])
    )


def test_reverse_sde_sample_set_does_not_depend_on_batching(em_result):
    """Chunks drawn separately with their first_index equal the rows of the global draw."""
    first_chunk = draw_em_chunk(KEY, 0)
    # Same batch shape: bitwise identical.
    np.testing.assert_array_equal(first_chunk.samples, draw_em_chunk(KEY, 0).samples)
    for first in (0, NUM_SAMPLES // 2, NUM_SAMPLES - CHUNK):
        chunk = draw_em_chunk(KEY, first)
        rows = slice(first, first + CHUNK)
        np.testing.assert_allclose(chunk.samples, em_result.samples[rows], rtol=0, atol=EM_FLOAT_TOL)
        np.testing.assert_array_equal(chunk.nfe, em_result.nfe[rows])
    other = draw_em_chunk(jax.random.key(5), 0)
    assert np.all(np.abs(np.asarray(other.samples) - np.asarray(first_chunk.samples)) > 1e-3)


def test_probability_flow_sample_set_does_not_depend_on_batching(ode_result):
    for first in (0, NUM_SAMPLES // 2, NUM_SAMPLES - CHUNK):
        chunk = draw_ode_chunk(KEY, first)
        rows = slice(first, first + CHUNK)
        np.testing.assert_allclose(chunk.samples, ode_result.samples[rows], rtol=0, atol=ODE_FLOAT_TOL)


def test_sharded_draw_equals_global_draw(em_result):
    """Each of 8 devices draws its slice (a traced first_index) inside shard_map."""
    devices = jax.devices()[:8]
    if len(devices) < 8:
        pytest.skip("needs 8 devices")
    mesh = Mesh(np.array(devices), ("data",))

    def local(key):
        first = jax.lax.axis_index("data") * CHUNK
        return sample_reverse_sde(PROCESS, SCORE, key, CHUNK, SHAPE, EM_STEPS, first_index=first)

    # check_vma=False: diffrax's internal lax.cond mixes device-varying and invariant values.
    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=PartitionSpec(), out_specs=PartitionSpec("data"), check_vma=False
    )
    sharded = jax.jit(sharded)(KEY)
    np.testing.assert_array_equal(sharded.samples[:CHUNK], draw_em_chunk(KEY, 0).samples)
    np.testing.assert_allclose(sharded.samples, em_result.samples[: 8 * CHUNK], rtol=0, atol=EM_FLOAT_TOL)


def test_probability_flow_is_deterministic_given_prior_draw(ode_result, em_result):
    sampled = draw_ode_chunk(KEY, 0)
    x_T = sample_prior(PROCESS, example_keys(KEY, CHUNK), SHAPE)
    solved = jax.jit(lambda x: solve_probability_flow(PROCESS, SCORE, x))(x_T)
    np.testing.assert_array_equal(solved.samples, sampled.samples)
    np.testing.assert_array_equal(solved.nfe, sampled.nfe)
    # The reverse SDE starts from the same prior draws, but its noise makes it land elsewhere.
    distance = np.linalg.norm(np.asarray(em_result.samples) - np.asarray(ode_result.samples), axis=1)
    assert np.median(distance) > 0.1


def test_prior_draws_follow_keys():
    keys = example_keys(KEY, 5, first_index=3)
    x = sample_prior(PROCESS, keys, (4, 4, 1))
    assert x.shape == (5, 4, 4, 1)
    single = sample_prior(PROCESS, example_keys(KEY, 1, first_index=4), (4, 4, 1))
    np.testing.assert_array_equal(x[1], single[0])


# --- NFE -------------------------------------------------------------------------------------


def test_reverse_sde_nfe_is_exact():
    """num_steps + 1 with the denoising step (without it: test_image_shaped_examples)."""
    num_steps = 30
    counted, count = counting(SCORE)
    result = jax.jit(lambda key: sample_reverse_sde(PROCESS, counted, key, 1, SHAPE, num_steps))(KEY)
    jax.block_until_ready(result)
    assert count[0] == num_steps + 1  # one example: the callback fires once per evaluation
    np.testing.assert_array_equal(result.nfe, num_steps + 1)


def test_reverse_sde_nfe_of_batch(em_result):
    np.testing.assert_array_equal(em_result.nfe, EM_STEPS + 1)
    assert em_result.nfe.dtype == jnp.int32 and bool(em_result.all_successful)
    assert float(em_result.mean_nfe) == EM_STEPS + 1 == int(em_result.max_nfe)


@pytest.mark.parametrize(
    "solver, num_steps", [("tsit5", None), ("dopri5", None), ("heun", 25), ("euler", 25)]
)
def test_probability_flow_nfe_matches_counted_evaluations(solver, num_steps):
    counted, count = counting(SCORE)
    draw = jax.jit(
        lambda key, first: sample_probability_flow(
            PROCESS, counted, key, 1, SHAPE, solver=solver, num_steps=num_steps, first_index=first
        )
    )
    for first in range(2):  # two examples: different step counts, incl. rejected steps
        count[0] = 0
        result = draw(KEY, first)
        jax.block_until_ready(result)
        assert int(result.nfe[0]) == count[0]
        if num_steps is not None:
            assert count[0] == {"heun": 2, "euler": 1}[solver] * num_steps
        else:
            assert (count[0] - 1) % 6 == 0  # FSAL: 6 new evaluations per step, plus the first


def test_probability_flow_nfe_bounds(ode_result):
    nfe = np.asarray(ode_result.nfe)
    assert nfe.shape == (NUM_SAMPLES,) and nfe.dtype == np.int32
    assert np.all(nfe > 0) and np.all(nfe < 4096 * 7)
    assert np.all((nfe - 1) % 6 == 0)
    assert len(np.unique(nfe)) > 1  # step control is per example
    assert float(ode_result.mean_nfe) <= int(ode_result.max_nfe)


def test_probability_flow_max_steps():
    draw = lambda throw: jax.jit(
        lambda key: sample_probability_flow(PROCESS, SCORE, key, 4, SHAPE, max_steps=4, throw=throw)
    )(KEY)
    result = draw(False)
    assert not np.any(result.successful)
    np.testing.assert_array_equal(result.nfe, 6 * 4 + 1)
    with pytest.raises(RuntimeError, match="max_steps=4"):
        jax.block_until_ready(draw(True))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown solver"):
        sample_probability_flow(PROCESS, SCORE, jax.random.key(0), 2, SHAPE, solver="rk4")
    with pytest.raises(ValueError, match="num_steps"):
        sample_probability_flow(PROCESS, SCORE, jax.random.key(0), 2, SHAPE, solver="heun")
    with pytest.raises(ValueError, match="adaptive"):
        sample_probability_flow(PROCESS, SCORE, jax.random.key(0), 2, SHAPE, num_steps=10)
    with pytest.raises(ValueError, match="num_steps"):
        sample_reverse_sde(PROCESS, SCORE, jax.random.key(0), 2, SHAPE, 0)
