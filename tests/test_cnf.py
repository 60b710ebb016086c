"""Continuous normalising flows: the concatsquash network and the maximum-likelihood
objective against closed forms.

For the affine field v(x) = A x + b the flow is known exactly: with M = [[A, b], [0, 0]],
[x(t); 1] = expm(M t) [x; 1], and the log-determinant of the map is log det expm(A T) =
T tr A, so log p_0(x) = log N(x(T); 0, I) + T tr A. The RNODE integrals are closed forms
too: the Jacobian is A, so int |dv/dx|_F^2 dt = T |A|_F^2, and the kinetic energy
int_0^T |C expm(M t) y0|^2 dt (C = [A b], y0 = [x; 1]) is y0^T G y0 with G from Van Loan's
block exponential (Van Loan 1978, "Computing integrals involving the matrix exponential").
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.linalg

from genjax.nets.concatsquash import ConcatSquashMLP, end_time
from genjax.objectives.maximum_likelihood import (
    cnf_loss_and_metrics,
    cnf_nll_loss,
    cnf_terms,
)
from tests.counting import counting

A = np.array([[-0.3, 0.8], [-0.5, 0.2]])
B = np.array([0.3, -0.2])
T = 0.7
POINTS = np.array([[0.5, -1.0], [1.5, 0.3], [-0.7, 0.9], [0.1, 2.0]])
KEYS = jax.random.split(jax.random.key(0), len(POINTS))


class StandardNormalPrior:
    """The process interface the objective reads: prior_log_prob and t_max."""

    def __init__(self, t_max=T):
        self.t_max = t_max

    @staticmethod
    def prior_log_prob(z):
        return -0.5 * jnp.sum(z**2) - 0.5 * z.size * jnp.log(2.0 * jnp.pi)


PRIOR = StandardNormalPrior()


def affine(params):
    a, b = params
    return lambda x, t: a @ x + b


@functools.partial(jax.jit, static_argnums=4)
def affine_terms(a, b, x, keys, options):
    """cnf_terms of the affine field (a, b) with T = 0.7 and the options (a sorted tuple of
    items): one compiled program per option set, shared by the tests that use it."""
    return cnf_terms(affine((a, b)), PRIOR.prior_log_prob, x, keys, t_max=T, **dict(options))


def options_key(**options):
    return tuple(sorted(options.items()))


def _augmented(a, b):
    m = np.zeros((3, 3))
    m[:2, :2], m[:2, 2] = a, b
    return m


def exact_log_prob(a, b, x, t_max=T):
    flow = scipy.linalg.expm(_augmented(a, b) * t_max)
    z = x @ flow[:2, :2].T + flow[:2, 2]
    return -0.5 * np.sum(z**2, axis=1) - np.log(2 * np.pi) + t_max * np.trace(a)


def exact_kinetic_energy(a, b, x, t_max=T):
    """int_0^T |A x(t) + b|^2 dt by Van Loan: expm([[-M^T, Q], [0, M]] T) = [[., F12], [0, F22]],
    int_0^T expm(M^T t) Q expm(M t) dt = F22^T F12."""
    m = _augmented(a, b)
    c = np.concatenate([a, b[:, None]], axis=1)
    h = np.zeros((6, 6))
    h[:3, :3], h[:3, 3:], h[3:, 3:] = -m.T, c.T @ c, m
    f = scipy.linalg.expm(h * t_max)
    gram = f[3:, 3:].T @ f[:3, 3:]
    y0 = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    return np.einsum("ni,ij,nj->n", y0, gram, y0)


def test_van_loan_kinetic_energy_matches_quadrature():
    """The reference itself: Van Loan's formula against adaptive quadrature."""
    x = POINTS[1]

    def speed_squared(t):
        y = scipy.linalg.expm(_augmented(A, B) * t) @ np.append(x, 1.0)
        return np.sum((A @ y[:2] + B) ** 2)

    quadrature, _ = scipy.integrate.quad(speed_squared, 0.0, T, epsabs=1e-12)
    np.testing.assert_allclose(exact_kinetic_energy(A, B, x[None])[0], quadrature, rtol=1e-10)


# --- the concatsquash network ---------------------------------------------------------------


def test_concatsquash_layer_formula_and_shapes():
    """One layer (no hidden layers): (W x + c) * sigmoid(g t + d) + e t, [B, D] -> [B, D];
    the network contract's one time per example is required (a scalar t is refused)."""
    net = ConcatSquashMLP(hidden_dims=())
    x = jnp.asarray(POINTS, jnp.float32)
    t = jnp.linspace(0.0, 1.0, len(POINTS))
    params = net.init(jax.random.key(1), x, t)
    layer = params["params"]["ConcatSquashDense_0"]
    linear = x @ layer["linear"]["kernel"] + layer["linear"]["bias"]
    gate = jax.nn.sigmoid(t[:, None] * layer["gate"]["kernel"] + layer["gate"]["bias"])
    expected = linear * gate + t[:, None] * layer["time_bias"]["kernel"]
    assert set(layer["time_bias"]) == {"kernel"}  # the time bias has no constant term
    apply = jax.jit(net.apply)
    np.testing.assert_allclose(apply(params, x, t), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="one noise level per example"):
        apply(params, x, jnp.float32(0.5))


def test_concatsquash_stack_has_activation_between_layers_only():
    net = ConcatSquashMLP(hidden_dims=(5, 3), activation="tanh")
    x = jnp.asarray(POINTS, jnp.float32)
    t = jnp.full((len(POINTS),), 0.3)
    params = net.init(jax.random.key(2), x, t)

    def layer(p, h):
        g = jax.nn.sigmoid(t[:, None] * p["gate"]["kernel"] + p["gate"]["bias"])
        return (h @ p["linear"]["kernel"] + p["linear"]["bias"]) * g + t[:, None] * p["time_bias"]["kernel"]

    p = params["params"]
    h = jnp.tanh(layer(p["ConcatSquashDense_0"], x))
    h = jnp.tanh(layer(p["ConcatSquashDense_1"], h))
    expected = layer(p["ConcatSquashDense_2"], h)
    assert expected.shape == x.shape
    np.testing.assert_allclose(net.apply(params, x, t), expected, rtol=1e-5, atol=1e-6)


def test_trained_end_time_is_ffjord_flow_on_unit_interval():
    """With end_time T the module returns T f(x, T s), f the plain network with the same
    weights; a trained T is stored as sqrt_end_time (T = sqrt_end_time^2) and gets a gradient."""
    x = jnp.asarray(POINTS, jnp.float32)
    s = jnp.linspace(0.0, 1.0, len(POINTS))
    timed = ConcatSquashMLP(hidden_dims=(8,), end_time=0.5, train_end_time=True)
    params = timed.init(jax.random.key(3), x, s)
    np.testing.assert_allclose(params["params"]["sqrt_end_time"], np.sqrt(0.5), rtol=1e-6)
    params = jax.tree.map(lambda v: v, params)
    params["params"]["sqrt_end_time"] = jnp.float32(0.9)
    assert float(end_time(params)) == pytest.approx(0.81)
    plain = ConcatSquashMLP(hidden_dims=(8,))
    weights = {"params": {k: v for k, v in params["params"].items() if k != "sqrt_end_time"}}
    expected = 0.81 * plain.apply(weights, x, 0.81 * s)
    np.testing.assert_allclose(timed.apply(params, x, s), expected, rtol=1e-5, atol=1e-6)
    fixed = ConcatSquashMLP(hidden_dims=(8,), end_time=0.81)
    np.testing.assert_allclose(fixed.apply(weights, x, s), expected, rtol=1e-5, atol=1e-6)
    assert end_time(weights) is None
    grad = jax.grad(lambda p: jnp.sum(timed.apply(p, x, s) ** 2))(params)
    assert abs(float(grad["params"]["sqrt_end_time"])) > 1e-3


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"hidden_dims": (64, 0)}, "hidden_dims"),
        ({"hidden_dims": 64}, "hidden_dims"),
        ({"activation": "sigmoid"}, "activation"),
        ({"end_time": -0.5}, "end_time"),
        ({"end_time": True}, "end_time"),
        ({"train_end_time": True}, "train_end_time"),
        ({"end_time": 0.5, "train_end_time": 1}, "train_end_time"),
    ],
)
def test_concatsquash_rejects_bad_hyperparameters(kwargs, field):
    with pytest.raises(ValueError, match=field) as error:
        ConcatSquashMLP(**kwargs)
    assert "\n" not in str(error.value)


# --- the objective against the affine flow ----------------------------------------------


@pytest.mark.parametrize(
    "options, tolerance",
    [
        ({"solver": "dopri5", "rtol": 1e-6, "atol": 1e-6}, 1e-5),
        ({"solver": "rk4", "num_steps": 40}, 1e-5),
        pytest.param({"solver": "tsit5"}, 1e-4, marks=pytest.mark.slow),
        pytest.param({"solver": "heun", "num_steps": 200}, 1e-4, marks=pytest.mark.slow),
    ],
)
def test_exact_trace_log_likelihood_matches_affine_closed_form(options, tolerance):
    terms = affine_terms(A, B, jnp.asarray(POINTS, jnp.float32), KEYS, options_key(**options))
    np.testing.assert_allclose(terms.log_prob, exact_log_prob(A, B, POINTS), atol=tolerance)
    assert bool(jnp.all(terms.successful))


# A larger trace (T tr = 0.77) than A's, so that a biased trace estimator is caught.
A_HUTCHINSON = np.array([[0.6, 0.9], [-0.4, 0.5]])


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased_for_the_affine_flow(probe):
    """Many probes on one point: the mean estimate of log p lies within 4 standard errors
    of the closed form, and so does the mean |A eps|^2 estimate of the Frobenius integral."""
    num_probes = 1000
    x = jnp.tile(jnp.asarray(POINTS[:1], jnp.float32), (num_probes, 1))
    keys = jax.random.split(jax.random.key(5), num_probes)
    terms = affine_terms(A_HUTCHINSON, B, x, keys,
                         options_key(divergence="hutchinson", probe=probe, solver="rk4", num_steps=20))
    for estimate, exact in ((terms.log_prob, exact_log_prob(A_HUTCHINSON, B, POINTS[:1])[0]),
                            (terms.jacobian_frobenius, T * np.sum(A_HUTCHINSON**2))):
        estimate = np.asarray(estimate, np.float64)
        standard_error = estimate.std(ddof=1) / np.sqrt(num_probes)
        assert standard_error > 1e-3  # the estimate is noisy: the check has power
        assert abs(estimate.mean() - exact) < 4 * standard_error


def test_rnode_integrals_match_closed_forms_for_a_linear_field():
    # (the program of the rk4 case of the log-likelihood check above)
    terms = affine_terms(A, B, jnp.asarray(POINTS, jnp.float32), KEYS, options_key(solver="rk4", num_steps=40))
    np.testing.assert_allclose(terms.kinetic_energy, exact_kinetic_energy(A, B, POINTS), rtol=1e-5)
    np.testing.assert_allclose(terms.jacobian_frobenius, T * np.sum(A**2), rtol=1e-5)


def _closed_form_loss(a, b, kinetic_weight, jacobian_weight):
    per_example = (-exact_log_prob(a, b, POINTS) + kinetic_weight * exact_kinetic_energy(a, b, POINTS)
                   + jacobian_weight * T * np.sum(a**2))
    return per_example.mean()


@pytest.mark.parametrize("solver_options", [
    {"solver": "rk4", "num_steps": 40},
    pytest.param({"solver": "dopri5", "rtol": 1e-7, "atol": 1e-7}, marks=pytest.mark.slow),
])
def test_gradients_agree_between_adjoints_and_with_finite_differences(solver_options):
    """The loss (NLL + RNODE terms) of a batch of distinct points: d loss / d(A, b) by
    backpropagation through the solver, by the continuous adjoint, and by central finite
    differences of the closed form."""
    weights = {"kinetic_weight": 0.3, "jacobian_weight": 0.2}
    x = jnp.asarray(POINTS, jnp.float32)
    params = (jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32))
    grads = {}
    for adjoint in ("recursive_checkpoint", "backsolve"):
        loss = lambda p: cnf_nll_loss(affine(p), PRIOR, x, KEYS, adjoint=adjoint, **weights, **solver_options)
        value, grads[adjoint] = jax.jit(jax.value_and_grad(loss))(params)
        assert float(value) == pytest.approx(_closed_form_loss(A, B, **weights), abs=1e-5)
    h = 1e-6
    fd_a = np.zeros(4)
    for k in range(4):
        d = np.zeros(4)
        d[k] = h
        d = d.reshape(2, 2)
        fd_a[k] = (_closed_form_loss(A + d, B, **weights) - _closed_form_loss(A - d, B, **weights)) / (2 * h)
    fd_b = np.array([(_closed_form_loss(A, B + h * e, **weights) - _closed_form_loss(A, B - h * e, **weights)) / (2 * h)
                     for e in np.eye(2)])
    for adjoint, (grad_a, grad_b) in grads.items():
        np.testing.assert_allclose(np.ravel(grad_a), fd_a, atol=2e-4, err_msg=adjoint)
        np.testing.assert_allclose(grad_b, fd_b, atol=2e-4, err_msg=adjoint)


@pytest.mark.slow
def test_trained_end_time_gradient_agrees_between_adjoints():
    """A concatsquash field with a trained T: d loss / d sqrt_end_time is the same by
    backpropagation and by the continuous adjoint, and matches finite differences."""
    net = ConcatSquashMLP(hidden_dims=(8,), end_time=0.5, train_end_time=True)
    x = jnp.asarray(POINTS, jnp.float32)
    params = net.init(jax.random.key(7), x, jnp.zeros(len(POINTS)))
    unit = StandardNormalPrior(t_max=1.0)

    def loss(p, adjoint):
        velocity = lambda xi, t: net.apply(p, xi[None], t[None])[0]
        return cnf_nll_loss(velocity, unit, x, KEYS, adjoint=adjoint, solver="rk4", num_steps=16)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    grad_backprop = grad(params, "recursive_checkpoint")["params"]["sqrt_end_time"]
    grad_adjoint = grad(params, "backsolve")["params"]["sqrt_end_time"]

    @jax.jit
    def central_difference(h):
        shifted = lambda d: {"params": {**params["params"], "sqrt_end_time": params["params"]["sqrt_end_time"] + d}}
        return (loss(shifted(h), "recursive_checkpoint") - loss(shifted(-h), "recursive_checkpoint")) / (2 * h)

    assert abs(float(grad_backprop)) > 1e-2
    assert float(grad_adjoint) == pytest.approx(float(grad_backprop), rel=1e-3)
    assert float(grad_backprop) == pytest.approx(float(central_difference(1e-2)), rel=1e-3)


# --- NFE, failures, options -------------------------------------------------------------------


@pytest.mark.parametrize("solver, per_step, extra", [("dopri5", 6, 1), ("rk4", 4, 0)])
def test_forward_nfe_counts_field_evaluations(solver, per_step, extra):
    """With Hutchinson's one jvp, each evaluation of the augmented field runs v once."""
    counted, count = counting(affine((A, B)))
    run = jax.jit(lambda x: cnf_terms(counted, PRIOR.prior_log_prob, x, KEYS[:1], t_max=T, solver=solver,
                                      num_steps=7, divergence="hutchinson"))
    terms = run(jnp.asarray(POINTS[:1], jnp.float32))
    jax.block_until_ready(terms)
    assert int(terms.nfe[0]) == count[0]
    assert (count[0] - extra) % per_step == 0


def test_failed_solve_makes_the_loss_nan_and_is_counted():
    """A stiff field (eigenvalues -1e5: dopri5 needs about 2e4 steps) exhausts max_steps=1000;
    the same compiled program (the field's matrix is an argument) solves the affine flow."""
    x = jnp.asarray(POINTS, jnp.float32)
    loss_and_metrics = jax.jit(lambda a, b, x: cnf_loss_and_metrics(affine((a, b)), PRIOR, x, KEYS))
    loss, metrics = loss_and_metrics(-1e5 * np.eye(2), B, x)
    assert np.isnan(float(loss))
    assert int(metrics["failed_solves"]) == len(POINTS)
    loss, metrics = loss_and_metrics(A, B, x)
    assert np.isfinite(float(loss)) and int(metrics["failed_solves"]) == 0
    assert float(metrics["nll"]) == pytest.approx(-exact_log_prob(A, B, POINTS).mean(), abs=1e-4)
    assert float(metrics["nfe_forward_max"]) >= float(metrics["nfe_forward"]) > 0


@pytest.mark.parametrize(
    "options, field",
    [
        ({"divergence": "brute_force"}, "divergence"),
        ({"probe": "uniform"}, "probe"),
        ({"solver": "rk45"}, "solver"),
        ({"num_steps": 0}, "num_steps"),
        ({"rtol": -1.0}, "rtol"),
        ({"max_steps": 0}, "max_steps"),
        ({"adjoint": "adjoint"}, "adjoint"),
        ({"checkpoints": 0}, "checkpoints"),
        ({"kinetic_weight": -0.1}, "kinetic_weight"),
        ({"jacobian_weight": float("inf")}, "jacobian_weight"),
    ],
)
def test_bad_options_raise_one_line(options, field):
    with pytest.raises(ValueError, match=field) as error:
        cnf_nll_loss(affine((A, B)), PRIOR, jnp.asarray(POINTS, jnp.float32), KEYS, **options)
    assert "\n" not in str(error.value)


# --- training ------------------------------------------------------------------------------


def reference_log_prob(velocity, x, t_max=1.0, num_steps=32):
    """log p_0(x) of the flow of `velocity` with a N(0, I) prior at t_max, by the textbook
    augmented ODE in plain JAX (classical RK4, trace of jax.jacfwd), independent of the
    objective's code, so that a formula wrong there cannot also be wrong here."""

    def field(t, state):
        y, _ = state
        return velocity(y, t), jnp.trace(jax.jacfwd(lambda z: velocity(z, t))(y))

    def one(point):
        h = t_max / num_steps
        shift = lambda s, k, c: jax.tree.map(lambda a, b: a + c * b, s, k)

        def rk4_step(i, state):
            t = i * h
            k1 = field(t, state)
            k2 = field(t + h / 2, shift(state, k1, h / 2))
            k3 = field(t + h / 2, shift(state, k2, h / 2))
            k4 = field(t + h, shift(state, k3, h))
            return jax.tree.map(lambda a, b, c, d, e: a + h / 6 * (b + 2 * c + 2 * d + e), state, k1, k2, k3, k4)

        z, delta = jax.lax.fori_loop(0, num_steps, rk4_step, (point, jnp.zeros(())))
        return -0.5 * jnp.sum(z**2) - jnp.log(2 * jnp.pi) + delta

    return jax.jit(jax.vmap(one))(x)


def test_reference_log_prob_matches_the_affine_closed_form():
    log_prob = reference_log_prob(affine((jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32))),
                                  jnp.asarray(POINTS, jnp.float32), t_max=T)
    np.testing.assert_allclose(log_prob, exact_log_prob(A, B, POINTS), atol=1e-5)


TARGET_MEAN = np.array([1.0, -0.5])
TARGET_COVARIANCE = np.array([[1.5, 0.6], [0.6, 0.8]])


@pytest.mark.slow
def test_tiny_cnf_learns_a_gaussian_to_its_entropy():
    """A concatsquash CNF trained by maximum likelihood on a correlated 2-D Gaussian: on
    fresh test points its NLL (computed by `reference_log_prob`, not by the objective's
    code) lies within Monte Carlo error of the NLL of the true density on the same points
    (their paired difference estimates KL(p || p_model) >= 0), and both are near the
    entropy 1 + log(2 pi) + log det(Sigma) / 2."""
    net = ConcatSquashMLP(hidden_dims=(16, 16), activation="tanh")
    unit = StandardNormalPrior(t_max=1.0)
    chol = np.linalg.cholesky(TARGET_COVARIANCE)
    sample = lambda key, n: jax.random.normal(key, (n, 2)) @ chol.T + TARGET_MEAN
    params = net.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros(1))
    optimizer = optax.adam(1e-2)
    options = {"solver": "rk4", "num_steps": 6}

    def velocity(p):
        return lambda xi, t: net.apply(p, xi[None], t[None])[0]

    @jax.jit
    def step(p, opt_state, key):
        key_data, key_probe = jax.random.split(key)
        batch = sample(key_data, 256)
        loss, grads = jax.value_and_grad(
            lambda q: cnf_nll_loss(velocity(q), unit, batch, jax.random.split(key_probe, 256), **options))(p)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    opt_state = optimizer.init(params)
    for i in range(300):
        params, opt_state, loss = step(params, opt_state, jax.random.key(i + 1))
        if i % 10 == 0:
            jax.block_until_ready(loss)

    test = sample(jax.random.key(10_000), 2000)
    model_log_prob = reference_log_prob(velocity(params), test)
    diff = np.asarray(test) - TARGET_MEAN
    true_log_prob = (-0.5 * np.einsum("ni,ij,nj->n", diff, np.linalg.inv(TARGET_COVARIANCE), diff)
                     - np.log(2 * np.pi) - 0.5 * np.log(np.linalg.det(TARGET_COVARIANCE)))
    gap = true_log_prob - np.asarray(model_log_prob, np.float64)  # mean: KL estimate
    standard_error = gap.std(ddof=1) / np.sqrt(len(gap))
    assert abs(gap.mean()) < max(3 * standard_error, 0.01), (gap.mean(), standard_error)
    entropy = 1 + np.log(2 * np.pi) + 0.5 * np.log(np.linalg.det(TARGET_COVARIANCE))
    model_nll = -float(np.mean(model_log_prob))
    assert abs(model_nll - entropy) < 3 * np.std(true_log_prob) / np.sqrt(len(gap)) + abs(gap.mean())
