"""The held-out NLL counts failed ODE solves and never averages over the survivors only."""
import jax
import numpy as np
import pytest

from genjax import factory
from genjax.evaluate.evaluator import format_table
from genjax.evaluate.likelihood import negative_log_likelihood
from genjax.experiment import build_experiment
from tests.tiny_config import tiny_config

# With the exact score of the mixture these points need 11 to 18 Tsit5 steps at rtol = atol = 1e-5.
OPTIONS = dict(divergence="exact", solver="tsit5", rtol=1e-5, atol=1e-5)
TOO_FEW_STEPS = 13


@pytest.fixture(scope="module")
def oracle_setup():
    config = tiny_config()
    config.data.name = "gaussian_mixture"
    experiment = build_experiment(config, devices=jax.devices()[:1])
    score_fn, _ = factory.build_oracle(config, experiment.process)
    return experiment, score_fn, experiment.reference_data(32)


def test_converged_solves_give_the_mean_over_all_points(oracle_setup):
    experiment, score_fn, held_out = oracle_setup
    nll = negative_log_likelihood(experiment, None, held_out, dict(OPTIONS, max_steps=4096),
                                  model=lambda _: score_fn)
    assert nll["failed_points"] == 0 and nll["num_points"] == 32
    assert np.isfinite(nll["nll_nats_per_dim"]) and np.isfinite(nll["nll_standard_error"])


def test_failed_solves_are_counted_and_make_the_nll_nan(oracle_setup):
    experiment, score_fn, held_out = oracle_setup
    nll = negative_log_likelihood(experiment, None, held_out, dict(OPTIONS, max_steps=TOO_FEW_STEPS),
                                  model=lambda _: score_fn)
    failures = nll["failed_points"]
    assert 0 < failures < len(held_out)  # some, not all: a mean over the survivors would exist
    assert np.isnan(nll["nll_nats_per_dim"]) and np.isnan(nll["nll_standard_error"])

    results = {"baselines": {"data_vs_data": {"swd": 0.1, "mmd": 0.001}, "prior_vs_data": {"swd": 1.0, "mmd": 0.5}},
               "samplers": {}, "likelihood": dict(nll, prior_nll_nats_per_dim=3.6)}
    table = format_table(results)
    assert f"{failures} failed solves" in table
    assert f"failed for {failures} of 32 points; raise evaluate.likelihood.max_steps" in table


def test_chunked_evaluation_gives_every_point_the_same_value(oracle_setup):
    """Chunks of 5 points (7 chunks, the last one padded) on 8 devices against one call on one
    device: point i keeps its probes and solve whatever the chunk (per-example step control);
    and the failures of the step-starved solve are counted over all chunks."""
    experiment, score_fn, held_out = oracle_setup
    whole = negative_log_likelihood(experiment, None, held_out, dict(OPTIONS, divergence="hutchinson", max_steps=64),
                                    model=lambda _: score_fn, chunk_size=0)
    config = experiment.config.copy_and_resolve_references()
    config.mesh.data = 8
    eight = build_experiment(config, devices=jax.devices()[:8])
    chunked = negative_log_likelihood(eight, None, held_out, dict(OPTIONS, divergence="hutchinson", max_steps=64),
                                      model=lambda _: score_fn, chunk_size=5)
    assert chunked["nll_nats_per_dim"] == pytest.approx(whole["nll_nats_per_dim"], rel=1e-6)
    assert chunked["nfe_mean"] == whole["nfe_mean"]
    starved = negative_log_likelihood(eight, None, held_out, dict(OPTIONS, max_steps=TOO_FEW_STEPS),
                                      model=lambda _: score_fn, chunk_size=5)
    reference = negative_log_likelihood(experiment, None, held_out, dict(OPTIONS, max_steps=TOO_FEW_STEPS),
                                        model=lambda _: score_fn)
    assert starved["failed_points"] == reference["failed_points"] > 0
