"""The PFGM experiment scripts: the naive field's closed form, the collapse and the recovery
they report, and their one-line errors."""
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.data.point_set_oracle import planar_mixture_field

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_naive_field_is_the_field_of_the_mixtures_charges():
    """Gauss's-law closed form = the Monte Carlo mean of point-charge fields (x - y) / |x - y|^2
    over draws y of the mixture, at points inside and outside the data."""
    from genjax.data.gaussian_mixture import make_gaussian_mixture

    weights, means, std = (0.6, 0.3, 0.1), ((-1.5, 0.0), (1.5, 0.0), (0.0, 2.0)), 0.35
    mixture = make_gaussian_mixture(weights, means, std)
    y = mixture.sample(jax.random.key(0), 400_000)

    @jax.jit
    def field_and_estimate(x):  # one program for every x
        diff = x - y
        per_charge = diff / jnp.sum(diff**2, axis=1, keepdims=True)
        return (planar_mixture_field(x, weights, means, std), jnp.mean(per_charge, axis=0),
                jnp.std(per_charge, axis=0) / np.sqrt(len(y)))

    for x in ([0.0, 0.5], [-1.2, 0.1], [3.0, 3.0], [0.1, 2.2]):
        field, estimate, se = jax.device_get(field_and_estimate(jnp.asarray(x)))
        np.testing.assert_array_less(np.abs(field - estimate), 5 * se + 1e-4)


def test_bad_flags_are_one_line_errors(tmp_path):
    for module, flag in (("experiments.pfgm_mode_collapse", "--radius=-1"), ("experiments.pfgm_oracle", "--dims=0")):
        result = subprocess.run([sys.executable, "-m", module, f"--workdir={tmp_path}", flag], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stderr.strip().startswith("error:"), result.stderr[-500:]


@pytest.mark.slow
def test_mode_collapse_study_shows_collapse_and_recovery(tmp_path):
    command = [sys.executable, "-m", "experiments.pfgm_mode_collapse", f"--workdir={tmp_path}",
               "--num_samples=400", "--num_charges=256"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    methods = json.load(open(tmp_path / "mode_collapse.json"))["methods"]
    naive = methods["naive N-dim field (no augmentation)"]
    assert naive["shares"][2] == 0.0 and naive["distinct_end_points"] <= 3  # the light mode is lost
    charges = np.asarray(methods["the 256 charges"]["shares"])
    for name in ("PFGM (D = 1)", "PFGM++ D = 128"):
        shares = np.asarray(methods[name]["shares"])
        assert np.all(np.abs(shares - charges) < 4 * np.sqrt(charges * (1 - charges) / 400)), (name, shares)
    for png in ("mode_collapse_trajectories.png", "mode_collapse_shares.png"):
        assert (tmp_path / png).stat().st_size > 10_000
