"""AdamW (decoupled weight decay) as one map: its discrete run, its second-order form, its
threshold, and every flow that models it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rodflow
from rodflow import Adam, AdamW
from rodflow._metrics import loss_error
from rodflow.flows import FlowArgs, MomentumRodFlow, MomentumStableFlow, RodFlow, StableFlow, alternating_rate


def _problem():
    return rodflow.problems.get("mlp-digits", n=40, width=8, depth=2)


def test_defaults_and_options():
    m = AdamW()
    assert (m.beta1, m.beta2, m.eps, m.bias_correction, m.weight_decay) == (0.9, 0.999, 1e-8, True, 1e-4)
    assert m.name == "adamw" and m.sharpness_kind == "preconditioned" and m.momentum() == 0.9
    with pytest.raises(TypeError):
        AdamW(factory=optax.adam)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_delta_is_one_adamw_update(bias_correction):
    """`delta` is one step of the optimiser, `x' = x - lr (mu_hat / (sqrt(nu_hat) + eps) + wd x)`,
    written out here from the moments of `z`; with bias correction the optimiser is
    `optax.adamw` itself."""
    p, lr, wd, b1, b2, eps = _problem(), 3e-3, 0.05, 0.9, 0.999, 1e-8
    m = AdamW(weight_decay=wd, bias_correction=bias_correction)
    if bias_correction:
        ref = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd)
        x, st = p.x0, ref.init(p.x0)
    z = m.init_state(p, p.x0, lr)
    for k in range(6):
        x_k, mu, nu = m.split(p, z)
        g = jax.grad(p.loss_flat)(x_k)
        mu1, nu1 = b1 * mu + (1 - b1) * g, b2 * nu + (1 - b2) * g**2
        c1, c2 = ((1 - b1 ** (k + 1)), (1 - b2 ** (k + 1))) if bias_correction else (1.0, 1.0)
        dx = -lr * ((mu1 / c1) / (jnp.sqrt(nu1 / c2) + eps) + wd * x_k)
        d = m.split(p, m.delta(p, z, lr, k))
        np.testing.assert_allclose(d.params, dx, rtol=1e-10, atol=1e-18)
        np.testing.assert_allclose(d.momentum, mu1 - mu, rtol=1e-10, atol=1e-18)
        np.testing.assert_allclose(d.nu, nu1 - nu, rtol=1e-10, atol=1e-22)
        z = z + m.delta(p, z, lr, k)
        if bias_correction:  # the discrete run executes optax.adamw: the same iterates
            upd, st = ref.update(jax.grad(p.loss_flat)(x), st, x)
            x = optax.apply_updates(x, upd)
            np.testing.assert_allclose(m.params(p, z), x, rtol=0, atol=1e-14)


def test_zero_weight_decay_is_adam():
    """With `wd = 0` every published quantity is Adam's, to the bit."""
    p, lr = _problem(), 3e-3
    a, w = Adam(beta1=0.8), AdamW(beta1=0.8, weight_decay=0.0)
    z = a.init_state(p, p.x0, lr)
    for k in range(3):
        np.testing.assert_array_equal(w.delta(p, z, lr, k), a.delta(p, z, lr, k))
        np.testing.assert_array_equal(w.step_preconditioner(p, z, k), a.step_preconditioner(p, z, k))
        z = z + a.delta(p, z, lr, k)
    assert w.threshold(lr) == a.threshold(lr)
    for k in (0.0, 0.5, 2.5, 40.0):
        assert [float(c) for c in w.coefficients(lr, k)] == [float(c) for c in a.coefficients(lr, k)]
    args_a, args_w = FlowArgs(p, jnp.asarray(lr), a), FlowArgs(p, jnp.asarray(lr), w)
    for flow in (MomentumStableFlow(), MomentumRodFlow()):
        y = flow.init(p.x0, args_a)
        for u, v in zip(flow.vector_field(1.5, y, args_w), flow.vector_field(1.5, y, args_a)):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_second_order_form_is_exact_with_a_frozen_preconditioner(bias_correction):
    """AdamW with a frozen preconditioner `P` (run by hand) satisfies
    `x_{k+1} - x_k = beta_k (x_k - x_{k-1}) - lr_k (P^{-1} g(x_k) + wd x_k)` with the map's
    published `(beta_k, lr_k)` (`beta_k` is Adam's times `1 - lr wd`) and decay `wd`."""
    p, lr, wd, b1 = _problem(), 0.01, 0.5, 0.8
    m = AdamW(beta1=b1, weight_decay=wd, bias_correction=bias_correction)
    assert m.decoupled_decay() == wd
    P = 1.0 + jnp.linspace(0.0, 1.0, p.dim)
    grad = jax.grad(p.loss_flat)
    xs, x, mu = [p.x0], p.x0, jnp.zeros(p.dim)
    for k in range(8):
        mu = b1 * mu + (1 - b1) * grad(x)
        mu_hat = mu / (1 - b1 ** (k + 1)) if bias_correction else mu
        x = x - lr * (mu_hat / P + wd * x)
        xs.append(x)
    for k in range(1, 8):
        beta, lr_k = m.coefficients(lr, float(k))
        adam_beta, adam_lr = Adam(beta1=b1, bias_correction=bias_correction).coefficients(lr, float(k))
        assert float(beta) == pytest.approx(float(adam_beta) * (1 - lr * wd), rel=1e-14)
        assert float(lr_k) == float(adam_lr)
        rhs = beta * (xs[k] - xs[k - 1]) - lr_k * (grad(xs[k]) / P + wd * xs[k])
        np.testing.assert_allclose(xs[k + 1] - xs[k], rhs, rtol=1e-9, atol=1e-17)


@pytest.mark.parametrize("frac", [0.99, 1.01])
def test_threshold_is_linear_stability(frac):
    """On `L = lam x^2 / 2` (nu frozen at a positive value, `x = 0`) the Jacobian of the map on
    all of `z = (x, mu, nu)` has spectral radius < 1 iff `lam / P < threshold`, with
    `threshold = (1 + beta1)/(1 - beta1) (2/lr - wd)`; at the threshold it has the eigenvalue -1.
    The decay lowers the threshold by `wd (1 + beta1)/(1 - beta1)`, nine times `wd` here."""
    lr, wd, b1 = 0.01, 20.0, 0.8
    m = AdamW(beta1=b1, weight_decay=wd, bias_correction=False)
    thr = float(m.threshold(lr))
    assert thr == pytest.approx((1 + b1) / (1 - b1) * (2 / lr - wd), rel=1e-14)
    assert thr == pytest.approx(float(Adam(beta1=b1).threshold(lr)) - 9 * wd, rel=1e-14)

    def jacobian(lam):
        prob = rodflow.Problem(lambda x: 0.5 * lam * jnp.sum(x**2), jnp.zeros(1))
        st = m.split(prob, m.init_state(prob, prob.x0, lr))
        z = m.join(st._replace(nu=jnp.full_like(st.nu, 0.25)))
        return prob, z, jnp.eye(3) + jax.jacfwd(lambda z_: m.delta(prob, z_, lr))(z)

    prob, z, _ = jacobian(1.0)
    # lam / P at lam = 1, P of the step: nu' = beta2 nu (g = 0 at x = 0)
    s1 = float(m.sharpness(prob, z, lr, jnp.ones((1, 1)))[0][0])
    assert s1 == pytest.approx(1.0 / (np.sqrt(0.999 * 0.25) + 1e-8), rel=1e-12)
    _, _, J = jacobian(frac * thr / s1)
    radius = float(np.max(np.abs(np.linalg.eigvals(np.asarray(J)))))
    assert (radius < 1.0) == (frac < 1.0), radius
    _, _, J = jacobian(thr / s1)
    assert float(np.min(np.linalg.eigvals(np.asarray(J)).real)) == pytest.approx(-1.0, abs=1e-9)


def test_momentum_flows_include_the_decay():
    """The second-order flow's acceleration, written out: `du/dt = 2/(1 + b) (-lr_k (P^{-1} g +
    wd c) - (1 - b) u)`, `b = beta_k (1 - lr wd)`, Adam's bias-corrected `beta_k`, `lr_k` and `P`
    at the centre's step `k = t + 1/2`; and the rod grows iff its curvature exceeds the map's
    threshold (at it, the alternating rate is zero)."""
    lr, wd, b1, b2, eps, t = 0.01, 2.0, 0.9, 0.999, 1e-8, 3.0
    lams = jnp.array([50.0, 1.0])
    prob = rodflow.Problem(lambda x: 0.5 * jnp.sum(lams * x**2), jnp.array([1.0, -2.0]))
    m = AdamW(weight_decay=wd)
    args = FlowArgs(prob, jnp.asarray(lr), m)
    y = MomentumStableFlow().init(prob.x0, args)
    y = y._replace(velocity=jnp.array([0.3, -0.1]), nu=jnp.array([0.2, 0.05]))
    k = t + 0.5
    B = 1 - b1 ** (k + 1)
    beta = b1 * (1 - b1**k) / B * (1 - lr * wd)
    lr_k = lr * (1 - b1) / B
    P = jnp.sqrt(y.nu / (1 - b2 ** (k + 1))) + eps
    g = lams * y.centre
    du = 2 / (1 + beta) * (-lr_k * (g / P + wd * y.centre) - (1 - beta) * y.velocity)
    out = MomentumStableFlow().vector_field(t, y, args)
    np.testing.assert_allclose(out.centre, y.velocity, rtol=1e-15)
    np.testing.assert_allclose(out.velocity, du, rtol=1e-12)
    np.testing.assert_allclose(out.nu, (1 - b2) * (g**2 - y.nu), rtol=1e-12)

    # the rod: along e_0 with curvature lam / P; without bias correction nothing depends on t
    m = AdamW(weight_decay=wd, bias_correction=False)
    args = FlowArgs(prob, jnp.asarray(lr), m)
    flow = MomentumRodFlow()
    rod = flow.init(prob.x0, args)._replace(log_rho=jnp.log(1e-3), direction=jnp.array([1.0, 0.0]),
                                            nu=jnp.array([0.25, 0.25]))
    P0 = 0.5 + eps
    thr = float(m.threshold(lr))
    rates = []
    for frac in (0.98, 1.0, 1.02):
        lam = frac * thr * P0
        q = rodflow.Problem(lambda x, lam=lam: 0.5 * (lam * x[0] ** 2 + x[1] ** 2), prob.x0)
        a = FlowArgs(q, jnp.asarray(lr), m)
        assert float(flow.curvature(rod, a)) == pytest.approx(frac * thr, rel=1e-9)
        ds = float(flow.vector_field(0.0, rod, a).log_rho)
        expected = alternating_rate(lr * (1 - b1) * (frac * thr + wd), b1 * (1 - lr * wd))
        assert ds == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
        rates.append(ds)
    assert rates[0] < 0 and abs(rates[1]) < 1e-9 and rates[2] > 0


# slow: test_optimizers' Adam run covers the same flows on the same kind of problem; the AdamW
# map's own tests above (its delta, its second-order form, its threshold) stay in the default suite
@pytest.mark.slow
def test_every_flow_runs_with_adamw():
    """`stable`, `rod` (both `nu` variants), `stable-momentum` and `rod-momentum` with AdamW on a
    small network, far below the threshold: finite, not diverged, every flow starting on the
    discrete run's first centre, the first-order rods shrinking (below the threshold a rod cannot
    grow) and the second-order rod staying on its noise floor, where it is the second-order stable
    flow; and as close to the discrete run as with Adam (measured mean relative tracking errors:
    stable 0.157, rod 0.089, rod with smooth nu 0.092, the second-order flows 0.186, which ring
    less than the discrete run's opening transient; predicted-loss errors `loss_err` 0.049, 0.029,
    0.030, 0.011; Adam's are within 2% of these; 0.25 is a regression bound on the tracking
    errors, no stated target applies below the threshold). The loss prediction must beat the flat
    prediction "the loss stays where it started" by a factor of 4."""
    p = _problem()
    flows = {"stable": StableFlow(), "rod": RodFlow(), "rod-smooth": RodFlow(smooth_nu=True),
             "stable-momentum": MomentumStableFlow(), "rod-momentum": MomentumRodFlow()}
    m = AdamW(weight_decay=0.1)
    r = rodflow.compare(p, lr=3e-3, steps=60, optimizer=m, flows=flows, figure=False)
    metrics = r.metrics
    assert metrics["optimizer"] == "adamw" and metrics["sharpness_kind"] == "preconditioned"
    assert metrics["threshold"] == pytest.approx(float(m.threshold(3e-3)))
    assert metrics["optimizer_options"]["weight_decay"] == 0.1
    assert metrics["eos_onset_step"] is None
    d = r.series["discrete"]
    gd_loss = 0.5 * (d["loss"] + d["loss_next"])[1:]
    flat_err = loss_error(np.full_like(gd_loss, gd_loss[0]), gd_loss)
    for name in flows:
        f = metrics["flows"][name]
        assert f["diverged_at"] is None, name
        assert r.series[name]["dist"][0] < 1e-12, name  # starts on m_0
        assert np.isfinite(r.series[name]["rel_dist"][1:]).all(), name
        assert np.isfinite(r.series[name]["loss"]).all(), name
        assert f["rel_dist_mean"] < 0.25, (name, f["rel_dist_mean"])
        assert f["loss_err"] < flat_err / 4, (name, f["loss_err"], flat_err)
    f = metrics["flows"]
    for name in ("rod", "rod-smooth"):
        # the rod starts as GD's first pair and can only shrink below the threshold; it predicts
        # the loss of GD's pairs better than the stable flow, which starts from their centre
        assert np.all(np.diff(r.series[name]["rho"]) <= 0), name
        assert f[name]["loss_err"] < f["stable"]["loss_err"], name
    # the second-order rod starts on the floor (the momentum starts at rest) and stays there: it
    # is the second-order stable flow
    rod, stable = f["rod-momentum"], f["stable-momentum"]
    assert rod["rel_dist_mean"] == pytest.approx(stable["rel_dist_mean"], rel=1e-3)
    assert rod["loss_err"] == pytest.approx(stable["loss_err"], rel=1e-3)
    # The stated target (the issue: the best rod's tracking error at most half the best stable
    # flow's) is for EoS; on this run below the threshold it is NOT met (measured 0.089 / 0.157
    # = 0.57), so the bound stays at the old 0.7.
    assert f["rod"]["rel_dist_mean"] < 0.7 * f["stable"]["rel_dist_mean"]
    assert f["rod-smooth"]["rel_dist_mean"] < 0.7 * f["stable"]["rel_dist_mean"]
