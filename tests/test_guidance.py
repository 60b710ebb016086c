"""Classifier-free guidance (genjax.samplers.guidance) against exact math.

- For a two-component Gaussian mixture with class = component, the guided model fed the oracle
  (the component's exact score for class c, the mixture's for the null label) has the score
  (1 + w) s_t(x | c) - w s_t(x), whatever the output kind the oracle is written in.
- For equal-covariance Gaussians p(x | c) = N(m_c, a^2 I) and a null law N(m_0, a^2 I), the
  guided score is at every t the exact score of the diffused tilted law
  p(x | c)^{1+w} p_null(x)^{-w} = N((1 + w) m_c - w m_0, a^2 I) (the tilt of Gaussians of equal
  covariance is the Gaussian of the same covariance; for unequal ones it is not, and guided
  sampling then does not draw the tilt at t = 0, Chidambaram et al. 2024), so every sampler fed the
  guided oracle draws that law: the test checks its mean and variance per sampler.
- Config validation and the class-per-row sample grid.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import default
from genjax.data.gaussian_mixture import make_gaussian_mixture
from genjax.evaluate.image_grid import class_rows
from genjax.evaluate.sampling import sample_set_name, write_sample_set
from genjax.experiment import build_experiment
from genjax.factory import ConfigError
from genjax.processes import views
from genjax.processes.edm import EDMProcess
from genjax.processes.vp import VPSDE
from genjax.samplers.ddim import sample_ddim
from genjax.samplers.edm_heun import sample_edm_heun
from genjax.samplers.guidance import guided_model
from genjax.samplers.predictor_corrector import sample_predictor_corrector
from genjax.samplers.probability_flow import sample_probability_flow
from genjax.samplers.reverse_sde import sample_reverse_sde

MEANS = np.array([[-2.0, 1.0], [2.0, -0.5]], np.float32)
STD = 0.5


@dataclasses.dataclass(frozen=True)
class IsotropicGaussian:
    """N(mean, std^2 I) read as the oracle reads a law (`perturbed(alpha, sigma).score(x)`), in
    closed form: the mixture's per-example Cholesky solves would dominate a 1,000-sample draw."""

    mean: np.ndarray
    std: float

    def perturbed(self, alpha, sigma):
        return IsotropicGaussian(alpha * self.mean, jnp.sqrt(alpha**2 * self.std**2 + sigma**2))

    def score(self, x):
        return -(x - self.mean) / self.std**2


def oracle_model(process, components, null, output_kind: str) -> views.Model:
    """A batched conditional 'network' whose output is the exact `output_kind` of
    components[c] for label c, and of `null` for condition=None."""

    def score(law, x, t):
        alpha, sigma = process.marginal_coefficients(t)
        return law.perturbed(alpha, sigma).score(x)

    def output(law, x, t):
        s = score(law, x, t)
        alpha, sigma = process.marginal_coefficients(t)
        return {"score": s, "noise": views.noise_from_score(s, sigma),
                "denoised": views.denoised_from_score(x, s, alpha, sigma),
                "velocity": views.velocity_from_score(process, x, t, s)}[output_kind]

    def network(x, t, condition=None, *, dropout_key=None, train=False):
        if condition is None:
            return jax.vmap(lambda xi, ti: output(null, xi, ti))(x, t)
        per_class = [jax.vmap(lambda xi, ti, law=law: output(law, xi, ti))(x, t) for law in components]
        return jnp.stack(per_class)[condition, jnp.arange(x.shape[0])]

    return views.Model(network, output_kind)


@pytest.mark.parametrize("output_kind", ["score", "noise", "denoised", "velocity"])
def test_guided_model_has_the_guided_score_of_the_mixture(output_kind):
    process = VPSDE()
    mixture = make_gaussian_mixture([0.3, 0.7], MEANS, STD)
    components = [IsotropicGaussian(MEANS[k], STD) for k in range(2)]  # the mixture's components
    model = guided_model(oracle_model(process, components, mixture, output_kind), 2.5)
    x = jax.random.normal(jax.random.key(0), (64, 2)) * 2.0
    t = jax.random.uniform(jax.random.key(1), (64,), minval=0.05, maxval=0.9)
    condition = jnp.arange(64, dtype=jnp.int32) % 2

    def exact(xi, ti, c):
        alpha, sigma = process.marginal_coefficients(ti)
        conditional = jnp.where(c == 0, components[0].perturbed(alpha, sigma).score(xi),
                                components[1].perturbed(alpha, sigma).score(xi))
        return 3.5 * conditional - 2.5 * mixture.perturbed(alpha, sigma).score(xi)

    # Weight 0 is the conditional model itself, and the per-example view agrees with the batched one.
    plain_model = guided_model(oracle_model(process, components, mixture, output_kind), 0.0)

    @jax.jit  # compiled whole (eagerly, each operation of the oracle is a program of its own)
    def scores(x, t, condition):
        return (views.batched_score_fn(process, model)(x, t, condition), jax.vmap(exact)(x, t, condition),
                views.batched_score_fn(process, plain_model)(x, t, condition),
                jax.vmap(views.score_fn(process, model))(x, t, condition))

    guided, expected, plain, per_example = scores(x, t, condition)
    np.testing.assert_allclose(guided, expected, rtol=2e-4, atol=2e-4)
    assert not np.allclose(plain, guided, atol=1e-2)
    np.testing.assert_allclose(per_example, guided, rtol=1e-5, atol=1e-5)


# EDM's prior N(0, sigma_max^2) ignores the tilted mean (|m| = 5.2): the flow carries that
# mismatch to a bias |m| sigma_data / sigma_max in the samples (0.03 at sigma_max = 80), so the
# check uses sigma_max = 2000.
SAMPLERS = {
    "euler_maruyama": (VPSDE(), lambda p, m, k, n, c: sample_reverse_sde(p, m, k, n, (2,), 200, condition=c)),
    "predictor_corrector": (VPSDE(), lambda p, m, k, n, c: sample_predictor_corrector(p, m, k, n, (2,), 100,
                                                                                       condition=c)),
    "probability_flow": (VPSDE(), lambda p, m, k, n, c: sample_probability_flow(p, m, k, n, (2,), rtol=1e-4,
                                                                                atol=1e-4, condition=c)),
    "ddim": (VPSDE(), lambda p, m, k, n, c: sample_ddim(p, m, k, n, (2,), 100, condition=c)),
    "edm_heun": (EDMProcess(sigma_max=2000.0),
                 lambda p, m, k, n, c: sample_edm_heun(p, m, k, n, (2,), 40, condition=c)),
}
FAST_SAMPLERS = ("ddim", "edm_heun")  # the others run in the slow set


@pytest.mark.parametrize("sampler", [name if name in FAST_SAMPLERS else pytest.param(name, marks=pytest.mark.slow)
                                     for name in SAMPLERS])
def test_every_sampler_fed_the_guided_oracle_draws_the_tilted_gaussian(sampler):
    """Class c is N(m_c, a^2 I), the null law N(0, a^2 I) (neither class); with w = 1.5 the
    tilted law of class 1 is N(2.5 m_1, a^2 I): mean (5, -1.25), std 0.5. Mean within 4 standard errors,
    standard deviation within 8 %."""
    process, sample = SAMPLERS[sampler]
    weight, num = 1.5, 1000
    components = [IsotropicGaussian(MEANS[k], STD) for k in range(2)]
    null = IsotropicGaussian(np.zeros(2, np.float32), STD)
    model = guided_model(oracle_model(process, components, null, "score"), weight)
    condition = jnp.ones((num,), jnp.int32)
    result = jax.jit(lambda key: sample(process, model, key, num, condition))(jax.random.key(7))
    samples = np.asarray(result.samples)
    target = (1 + weight) * MEANS[1]
    np.testing.assert_array_less(np.abs(samples.mean(0) - target), 4 * STD / np.sqrt(num))
    np.testing.assert_allclose(samples.std(0), STD, rtol=0.08)


def test_guidance_refuses_what_it_cannot_guide():
    with pytest.raises(ValueError, match=r"guidance=-1.0 must be a finite number >= 0"):
        guided_model(views.Model(lambda x, t, c=None, **_: x, "score"), -1.0)
    with pytest.raises(ValueError, match="per-example function"):
        guided_model(lambda x, t: x, 1.0)
    with pytest.raises(ValueError, match="'poisson_field' output is not affine"):
        guided_model(views.Model(lambda x, t, c=None, **_: x, "poisson_field"), 1.0)
    with pytest.raises(ValueError, match="needs class labels"):
        guided_model(views.Model(lambda x, t, c=None, **_: x, "score"), 1.0).output_fn(jnp.zeros((1, 2)),
                                                                                       jnp.ones((1,)))


@pytest.mark.parametrize("field", ["sampling.guidance", "evaluate.guidance"])
def test_guidance_on_a_model_without_a_learned_null_label_is_a_config_error(field):
    config = default.get_config()
    section, name = field.split(".")
    config[section][name] = 2.0
    with pytest.raises(ConfigError, match=rf"^{field}=2.0: classifier-free guidance needs a class-conditional model"):
        build_experiment(config)
    config[section][name] = -0.5
    with pytest.raises(ConfigError, match=rf"^{field}=-0.5 must be finite and >= 0"):
        build_experiment(config)


def test_guidance_on_a_conditional_network_trained_without_label_dropout_is_a_config_error(monkeypatch):
    from genjax import factory

    monkeypatch.setitem(factory.DATASETS, "labelled_points",
                        lambda key, num: {"x": jax.random.normal(key, (num, 2)),
                                          "label": jnp.arange(num, dtype=jnp.int32) % 3})
    config = default.get_config()
    config.data.name, config.model.num_classes = "labelled_points", 3
    config.sampling.guidance = 1.0
    with pytest.raises(ConfigError, match=r"^sampling.guidance=1.0: the network is trained without label dropout "
                                          r"\(model.kwargs.label_dropout\)"):
        build_experiment(config)


def test_a_conditional_grid_has_one_row_per_class(tmp_path):
    labels = np.arange(50) % 10
    images = np.broadcast_to((labels / 9.0 * 2 - 1)[:, None, None, None], (50, 8, 8, 1)).astype(np.float32)
    ordered, columns = class_rows(images, labels)
    assert columns == 5
    np.testing.assert_array_equal(ordered[:, 0, 0, 0].reshape(10, 5), np.repeat(images[:10, 0, 0, 0], 5).reshape(10, 5))
    drawn = {"samples": images, "nfe": np.ones(50)}
    _, png = write_sample_set(tmp_path, 3, sample_set_name("ddim", 2.0), drawn, None, labels=labels)
    assert png == "samples/step_3_ddim_guidance2.png"
    grid = np.asarray(Image.open(tmp_path / png))
    scale = 4  # 8-pixel tiles are drawn 4x
    assert grid.shape == ((10 * 9 + 1) * scale, (5 * 9 + 1) * scale)
    # Row k is digit k's tiles: every pixel of row k has the grey level of label k.
    for k in range(10):
        row = grid[(1 + 9 * k) * scale:(9 + 9 * k) * scale, scale:-scale]
        tiles = row[:, [(9 * j) * scale + i for j in range(5) for i in range(8 * scale)]]
        assert np.all(tiles == round(k / 9 * 255))


@pytest.mark.slow  # a U-Net trains 4 steps and samples in fresh processes (minutes on 2 cores)
def test_sample_command_with_guidance_writes_one_row_per_class(tmp_path):
    import os
    import subprocess
    import sys

    from tests.subprocess_env import cpu_environment

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    common = [sys.executable, "-m", "experiments.main", "--config=configs/digits.py", f"--workdir={tmp_path}",
              f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.training.num_steps=4",
              "--config.training.batch_size=16", "--config.training.log_every=2", "--config.training.sync_every=2",
              "--config.training.checkpoint_every=4", "--config.evaluate.nll_num_points=0",
              "--config.evaluate.samplers=ddim", "--config.samplers.ddim.num_steps=3", "--config.evaluate.num_samples=20",
              "--config.sampling.sampler=ddim", "--config.sampling.num_samples=30"]
    for mode in (["--mode=train"], ["--mode=sample", "--config.sampling.guidance=3"]):
        result = subprocess.run(common + mode, cwd=root, env=cpu_environment(1), capture_output=True, text=True,
                                timeout=1200)
        assert result.returncode == 0, result.stderr[-3000:]
    grid = Image.open(tmp_path / "samples" / "step_4_ddim_guidance3.png")
    assert grid.size == ((3 * 9 + 1) * 4, (10 * 9 + 1) * 4)  # 30 samples, 3 per class: 10 rows of 3
    saved = np.load(tmp_path / "samples" / "step_4_ddim_guidance3.npz")
    np.testing.assert_array_equal(saved["labels"], np.arange(30) % 10)
    evaluation = __import__("json").load(open(tmp_path / "eval" / "step_4.json"))
    entry = evaluation["samplers"]["ddim"]
    assert entry["guidance_weight"] == 2.0 and 0 <= entry["digits_guided_class_accuracy"] <= 1
    assert "digits_class_accuracy" in entry
