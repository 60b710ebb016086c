"""Step control of the adaptive ODE solves (per example or per batch, rms or max error norm)
and the likelihood's options (t0, divergence "auto", failed solves counted).

The oracle checks are those of tests/test_samplers.py and tests/test_likelihood.py (the
exact score of a diffused Gaussian mixture), run with step_control="per_batch": one
`diffeqsolve` of the whole batch through the batched network, one step-size sequence.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import factory
from genjax.evaluate.likelihood import negative_log_likelihood
from genjax.experiment import build_experiment
from genjax.factory import ConfigError
from genjax.processes import VPSDE, views
from genjax.samplers import log_likelihood, sample_probability_flow
from genjax.samplers.likelihood import EXACT_MAX_DIMENSION, resolve_divergence
from tests import test_likelihood as oracle_likelihood
from tests.test_samplers import KEY, NUM_SAMPLES, PROCESS, SCORE, SHAPE, recovery_failures
from tests.tiny_config import tiny_config


def draw(step_control, error_norm="rms", num=NUM_SAMPLES, score=SCORE, key=KEY):
    return jax.jit(lambda k: sample_probability_flow(PROCESS, score, k, num, SHAPE, step_control=step_control,
                                                     error_norm=error_norm))(key)


@pytest.fixture(scope="module")
def per_example():
    return draw("per_example")


@pytest.fixture(scope="module")
def per_batch():
    return draw("per_batch")


# --- sampling ---------------------------------------------------------------------------------


def test_per_batch_recovers_mixture(per_batch):
    assert bool(per_batch.all_successful)
    assert recovery_failures(per_batch.samples, PROCESS.t_min_sample) == []


def test_per_batch_and_per_example_map_the_same_prior_draws_to_the_same_samples(per_example, per_batch):
    """Both solve the same deterministic flow from the same x_T, each within its tolerance
    (per_batch's rms over the batch lets a hard example drift further than per_example's)."""
    gap = np.abs(np.asarray(per_batch.samples - per_example.samples)).max(axis=1)
    assert np.median(gap) < 1e-4 and np.quantile(gap, 0.99) < 2e-3 and gap.max() < 0.02, np.quantile(gap, [.5, .99, 1])


def test_per_batch_nfe_is_the_batch_nfe_for_every_example(per_example, per_batch):
    nfe = np.asarray(per_batch.nfe)
    assert nfe.dtype == np.int32 and len(np.unique(nfe)) == 1 and (nfe[0] - 1) % 6 == 0
    assert int(per_batch.spent_nfe) == nfe[0] == int(per_batch.max_nfe) == float(per_batch.mean_nfe)
    # One step size for all: the batch's NFE lies between the mean and the max per-example NFE.
    assert float(per_example.mean_nfe) < nfe[0] < int(per_example.max_nfe)
    assert int(per_example.spent_nfe) == int(per_example.max_nfe)


def test_per_batch_is_deterministic(per_batch):
    again = draw("per_batch")
    np.testing.assert_array_equal(again.samples, per_batch.samples)
    np.testing.assert_array_equal(again.nfe, per_batch.nfe)


def test_per_batch_depends_on_the_chunk_per_example_does_not(per_example, per_batch):
    """The documented difference: a chunk of the first 100 examples gets its own step sizes
    under per_batch; under per_example its examples follow the same flow to the solver's
    tolerance (not bitwise: in float32, rounding that differs with the batch shape flips
    accept/reject decisions near the tolerance; in float64 the chunk is bitwise the same)."""
    chunk_pe, chunk_pb = draw("per_example", num=100), draw("per_batch", num=100)
    np.testing.assert_allclose(chunk_pe.samples, per_example.samples[:100], rtol=0, atol=1e-3)
    assert int(chunk_pb.nfe[0]) != int(per_batch.nfe[0])


def test_per_batch_under_shard_map_solves_each_devices_batch_on_its_own():
    """Documented: inside shard_map each device's local batch is one solve, so a per-batch
    sample set is that of chunks of N / devices (and depends on the device count)."""
    from jax.sharding import Mesh, PartitionSpec

    devices, chunk = jax.devices()[:2], 50
    mesh = Mesh(np.array(devices), ("data",))

    def local(key):
        first = jax.lax.axis_index("data") * chunk
        return sample_probability_flow(PROCESS, SCORE, key, chunk, SHAPE, first_index=first, throw=False,
                                       step_control="per_batch")

    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=PartitionSpec(), out_specs=PartitionSpec("data"),
                                    check_vma=False))(KEY)
    for device in range(2):
        alone = jax.jit(lambda k, first: sample_probability_flow(PROCESS, SCORE, k, chunk, SHAPE, first_index=first,
                                                                 step_control="per_batch"))(KEY, device * chunk)
        rows = slice(device * chunk, (device + 1) * chunk)
        np.testing.assert_array_equal(sharded.nfe[rows], alone.nfe)
        np.testing.assert_allclose(sharded.samples[rows], alone.samples, rtol=0, atol=1e-5)


def test_batch_of_one_is_the_per_example_solve():
    np.testing.assert_array_equal(draw("per_batch", num=1).samples, draw("per_example", num=1).samples)
    assert int(draw("per_batch", num=1).nfe[0]) == int(draw("per_example", num=1).nfe[0])


def counting_batched_model(score):
    """A batched score model whose network counts its calls (one per batched evaluation)."""
    count = [0]

    def bump():
        count[0] += 1

    def network(x, t, condition=None, *, dropout_key=None, train=False):
        jax.debug.callback(bump)
        return jax.vmap(score)(x, t)

    return views.Model(network, "score"), count


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
def test_per_batch_nfe_matches_counted_network_calls(solver):
    model, count = counting_batched_model(SCORE)
    result = jax.jit(lambda k: sample_probability_flow(PROCESS, model, k, 64, SHAPE, solver=solver,
                                                       step_control="per_batch"))(KEY)
    jax.block_until_ready(result)
    assert count[0] == int(result.nfe[0]) and (count[0] - 1) % 6 == 0 and count[0] > 7


def test_max_norm_takes_at_least_the_steps_of_rms(per_example, per_batch):
    batch_max = draw("per_batch", "max")
    assert recovery_failures(batch_max.samples, PROCESS.t_min_sample) == []
    assert int(batch_max.nfe[0]) > int(per_batch.nfe[0])
    example_max = draw("per_example", "max")
    assert float(example_max.mean_nfe) >= float(per_example.mean_nfe)


def test_unknown_step_control_or_norm_is_one_line():
    with pytest.raises(ValueError, match=r"^step_control='lockstep' is not known; choose one of per_example"):
        sample_probability_flow(PROCESS, SCORE, KEY, 2, SHAPE, step_control="lockstep")
    with pytest.raises(ValueError, match=r"^error_norm='l1' is not known; choose one of rms, max"):
        log_likelihood(PROCESS, SCORE, jnp.zeros((2, 2)), error_norm="l1")


# --- likelihood -------------------------------------------------------------------------------


def test_per_batch_likelihood_matches_the_mixture_log_density():
    points = oracle_likelihood.POINTS
    result = jax.jit(lambda p: log_likelihood(PROCESS, oracle_likelihood.SCORE, p, step_control="per_batch"))(points)
    assert bool(jnp.all(result.successful)) and len(np.unique(result.nfe)) == 1
    error = np.abs(np.asarray(result.log_prob - oracle_likelihood.analytic(points, PROCESS.t_min_sample))) / 2
    assert error.max() < 0.01 and error.mean() < 1e-3  # nats/dim, as for per_example


def test_per_batch_hutchinson_uses_each_points_own_probes():
    """Per-batch rows are (point, probe) pairs: each probe's value must match the per-example
    solve with the same probe (same estimator; only solver error separates them)."""
    points = oracle_likelihood.POINTS[:50]
    run = lambda control: jax.jit(lambda p: log_likelihood(
        PROCESS, oracle_likelihood.SCORE, p, oracle_likelihood.KEY, divergence="hutchinson", num_probes=4,
        step_control=control))(points)
    per_example, per_batch = run("per_example"), run("per_batch")
    np.testing.assert_allclose(per_batch.log_prob_per_probe, per_example.log_prob_per_probe, atol=2e-3)
    alone = jax.jit(lambda p, first: log_likelihood(
        PROCESS, oracle_likelihood.SCORE, p, oracle_likelihood.KEY, divergence="hutchinson", num_probes=4,
        first_index=first))
    for i in (0, 17, 49):  # each point solved on its own, with the probes of its global index
        np.testing.assert_allclose(per_batch.log_prob_per_probe[i], alone(points[i:i + 1], i).log_prob_per_probe[0],
                                   atol=2e-3)
    np.testing.assert_array_equal(per_batch.nfe, per_batch.nfe[0])
    assert int(per_batch.nfe[0]) % 4 == 0  # K solves' worth per point


def test_auto_divergence_is_exact_in_low_dimension_and_hutchinson_above():
    assert resolve_divergence("auto", (2,)) == "exact"
    assert resolve_divergence("auto", (EXACT_MAX_DIMENSION,)) == "exact"
    assert resolve_divergence("auto", (3, 3)) == "hutchinson"
    assert resolve_divergence("exact", (8, 8, 1)) == "exact"
    points = oracle_likelihood.POINTS[:20]
    auto = log_likelihood(PROCESS, oracle_likelihood.SCORE, points, divergence="auto")
    exact = log_likelihood(PROCESS, oracle_likelihood.SCORE, points, divergence="exact")
    np.testing.assert_array_equal(auto.log_prob, exact.log_prob)
    with pytest.raises(ValueError, match="needs a key"):  # 9 dimensions: Hutchinson, whose probes need a key
        log_likelihood(PROCESS, lambda x, t: -x, jnp.zeros((2, 9)), divergence="auto")


def gaussian_experiment(t0):
    config = tiny_config()
    config.evaluate.likelihood.t0 = t0
    config.evaluate.likelihood.divergence = "auto"
    return build_experiment(config, devices=jax.devices()[:1])


GAUSSIAN_STD = 0.01  # data N(0, s^2 I): p_t = N(0, v(t) I), v = alpha^2 s^2 + sigma^2


def gaussian_variance(process, t):
    alpha, sigma = process.marginal_coefficients(jnp.float64(t) if jax.config.x64_enabled else t)
    return float(alpha) ** 2 * GAUSSIAN_STD**2 + float(sigma) ** 2


def gaussian_score(process):
    def score(x, t):
        alpha, sigma = process.marginal_coefficients(t)
        return -x / (alpha**2 * GAUSSIAN_STD**2 + sigma**2)

    return score


def test_t0_from_the_config_reaches_the_solver():
    """log p_t0 of Gaussian data at t0 = 1e-5 and at the default t_min_sample = 1e-3 differ by
    the analytic amount (about 0.1 nats/dim at s = 0.01), through the evaluator's options."""
    data = np.asarray(jax.random.normal(jax.random.key(3), (64, 2)) * GAUSSIAN_STD, np.float32)
    nll = {}
    for t0 in (None, 1e-5):
        experiment = gaussian_experiment(t0)
        options = dict(experiment.config.evaluate.likelihood)
        nll[t0] = negative_log_likelihood(experiment, None, data, options,
                                          model=lambda _: gaussian_score(experiment.process))
        assert nll[t0]["failed_points"] == 0 and nll[t0]["divergence"] == "exact"
    assert nll[None]["t0"] == 1e-3 and nll[1e-5]["t0"] == 1e-5  # the result says which density it is
    process = experiment.process

    def analytic_nll(t):
        v = gaussian_variance(process, t)
        return float(np.mean(0.5 * np.log(2 * np.pi * v) + (data.astype(np.float64) ** 2).sum(1) / (2 * 2 * v)))

    assert process.t_min_sample == 1e-3
    measured = nll[1e-5]["nll_nats_per_dim"] - nll[None]["nll_nats_per_dim"]
    expected = analytic_nll(1e-5) - analytic_nll(1e-3)
    assert abs(expected) > 0.05
    assert abs(measured - expected) < 2e-4, (measured, expected)


@pytest.mark.parametrize("step_control", ["per_example", "per_batch"])
def test_failed_likelihood_solves_are_counted(step_control):
    experiment = gaussian_experiment(None)
    data = np.asarray(jax.random.normal(jax.random.key(4), (16, 2)) * GAUSSIAN_STD, np.float32)
    options = dict(experiment.config.evaluate.likelihood, max_steps=2, step_control=step_control)
    nll = negative_log_likelihood(experiment, None, data, options, model=lambda _: gaussian_score(experiment.process))
    assert nll["failed_points"] == 16 and nll["num_points"] == 16
    assert np.isnan(nll["nll_nats_per_dim"]) and np.isnan(nll["nll_standard_error"])


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path, value, expected", [
    ("samplers.probability_flow.step_control", "lockstep",
     "samplers.probability_flow.step_control='lockstep' is not known; choose one of per_example, per_batch"),
    ("samplers.probability_flow.error_norm", "l2",
     "samplers.probability_flow.error_norm='l2' is not known; choose one of rms, max"),
    ("evaluate.likelihood.step_control", "batch",
     "evaluate.likelihood.step_control='batch' is not known"),
    ("evaluate.likelihood.t0", 2.0, "evaluate.likelihood.t0=2.0 must lie in (0, t_max=1.0)"),
    ("evaluate.likelihood.t0", 0.0, "evaluate.likelihood.t0=0.0 must lie in (0, t_max=1.0)"),
])
def test_bad_option_is_one_line_naming_the_field(path, value, expected):
    config = tiny_config()
    section, *names = path.split(".")
    node = config[section]
    for name in names[:-1]:
        node = node[name]
    node[names[-1]] = value
    if path.startswith("samplers."):
        config.evaluate.samplers = "probability_flow"
    with pytest.raises(ConfigError) as raised:
        build_experiment(config, devices=jax.devices()[:1])
    message = str(raised.value)
    assert "\n" not in message and message.startswith(expected), message


def test_per_batch_options_reach_the_sampler_through_the_factory():
    config = tiny_config()
    config.samplers.probability_flow.step_control = "per_batch"
    config.samplers.probability_flow.rtol = config.samplers.probability_flow.atol = 1e-5
    sampler = factory.build_sampler(config, "probability_flow")
    result = jax.jit(lambda k: sampler(PROCESS, SCORE, k, 100, SHAPE))(KEY)
    np.testing.assert_array_equal(result.samples, draw("per_batch", num=100).samples)


# --- the benchmark's bad input ----------------------------------------------------------------


@pytest.mark.parametrize("arguments, expected", [
    ([], "error: --workdir is required"),
    (["--workdir=unused", "--torch_python=no/such/python"], "error: --torch_python='no/such/python' is not an executable"),
])
def test_benchmark_sampling_bad_flags_are_one_line(arguments, expected, tmp_path):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-m", "experiments.benchmark_sampling", *arguments], cwd=root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert not os.path.exists(os.path.join(root, "unused"))
