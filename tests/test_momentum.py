"""Heavy ball's second-order flows: `stable-momentum` and `rod-momentum`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rodflow
from rodflow import GradientDescent, HeavyBall, MomentumRodFlow, MomentumStableFlow, Nesterov, StableFlow
from rodflow.flows import alternating_rate


def _hb_roots(a, beta):
    """Roots of heavy ball's characteristic polynomial on a quadratic (`a = lr * lambda`)."""
    return np.roots([1.0, -(1.0 + beta - a), beta])


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("frac", [0.6, 0.99, 1.0, 1.02, 1.2])
def test_alternating_rate_is_the_discrete_root(beta, frac):
    a = frac * (2.0 + 2.0 * beta)
    roots = _hb_roots(a, beta)
    neg = [r for r in roots if abs(r.imag) < 1e-12 and r.real < 0]
    if neg:  # an alternating mode: its growth per step
        expected = np.log(max(abs(r.real) for r in neg))
    else:  # underdamped (or not alternating): decays like sqrt(beta), bounded by -2
        expected = 0.5 * np.log(beta) if beta > 0 else -np.inf
    expected = max(expected, -2.0)
    assert float(alternating_rate(a, beta)) == pytest.approx(expected, abs=1e-9)
    assert (float(alternating_rate(a, beta)) > 0) == (frac > 1.0)


def _quadratic(lams):
    lams = jnp.asarray(lams)
    return rodflow.Problem(lambda x: 0.5 * jnp.sum(lams * x**2), jnp.ones(len(lams)))


def test_second_order_flow_tracks_heavy_ball_better_than_the_joint_flow():
    """On a quadratic below the threshold, heavy ball (beta 0.9) rings in every direction with
    `a = lr lam` in (0.003, 3.8), decaying like sqrt(beta)^k; the damped second-order flow has
    that decay, the first-order flow on `z = (x, m)` damps the ringing at rate ~(1 - beta + a)/2."""
    p = _quadratic([0.5, 2.0, 5.0])
    flows = {"stable": StableFlow(), "stable-momentum": MomentumStableFlow(),
             "rod-momentum": MomentumRodFlow()}
    r = rodflow.compare(p, lr=0.1, steps=120, optimizer=HeavyBall(beta=0.9), flows=flows, figure=False)
    f = r.metrics["flows"]
    assert r.metrics["eos_onset_step"] is None
    # measured: 0.0116 against 0.0441
    assert f["stable-momentum"]["rel_dist_mean"] < 0.4 * f["stable"]["rel_dist_mean"], f
    # Below the threshold the rod stays at the noise floor: the rod flow is the stable flow.
    rod, stable = f["rod-momentum"]["rel_dist_mean"], f["stable-momentum"]["rel_dist_mean"]
    assert rod == pytest.approx(stable, rel=1e-3)
    assert np.max(r.series["rod-momentum"]["rho"]) < 1e-12


def test_rod_momentum_enters_eos_on_a_quadratic_above_threshold():
    """Curvature above heavy ball's threshold: the rod grows at the discrete root's rate."""
    beta, lr = 0.5, 0.1
    lam = 1.1 * (2.0 + 2.0 * beta) / lr
    p = _quadratic([lam, 1.0])
    flow = MomentumRodFlow()
    args = rodflow.flows.FlowArgs(problem=p, lr=jnp.asarray(lr), map=HeavyBall(beta=beta))
    y = flow.init(p.x0, args)
    y = y._replace(log_rho=jnp.log(1e-3), direction=jnp.array([1.0, 0.0]))  # along the sharp direction
    ds = flow.vector_field(0.0, y, args).log_rho
    assert float(ds) == pytest.approx(float(alternating_rate(lr * lam, beta)), rel=1e-6)
    assert float(flow.curvature(y, args)) == pytest.approx(lam, rel=1e-6)


def test_momentum_flows_reject_other_optimizers_and_accept_gd():
    p = rodflow.problems.get("eos-toy")
    for flow in (MomentumStableFlow(), MomentumRodFlow()):
        assert flow.unsupported(Nesterov()) == (
            "needs a map with a second-order (heavy-ball) form (GD, heavy ball, RMSProp, Adam, AdamW "
            "and the scalar variants); nesterov does not provide it")
        for m in (GradientDescent(), HeavyBall(), rodflow.Adam(), rodflow.RMSProp(), rodflow.AdamW()):
            assert flow.unsupported(m) is None
        # refused before anything is traced
        args = rodflow.flows.FlowArgs(problem=p, lr=jnp.asarray(0.1), map=Nesterov())
        with pytest.raises(ValueError, match="does not support optimizer 'nesterov'"):
            flow.init(p.x0, args)
    with pytest.raises(ValueError, match="nesterov"):
        rodflow.compare(p, lr=0.1, steps=5, optimizer=Nesterov(), flows=["stable-momentum"], figure=False)
    # GD is heavy ball with beta = 0: the rod grows at log|1 - a| (GD's a - 2 to first order).
    lam, lr = 25.0, 0.1
    q = _quadratic([lam, 1.0])
    args = rodflow.flows.FlowArgs(problem=q, lr=jnp.asarray(lr), map=GradientDescent())
    flow = MomentumRodFlow()
    y = flow.init(q.x0, args)
    assert y.nu is None  # GD has no second moment
    y = y._replace(log_rho=jnp.log(1e-3), direction=jnp.array([1.0, 0.0]))
    assert float(flow.vector_field(0.0, y, args).log_rho) == pytest.approx(np.log(lr * lam - 1.0), rel=1e-6)


def test_momentum_rod_vmaps_over_lr():
    p = _quadratic([0.5, 2.0])
    flow = MomentumRodFlow()

    def rhs(lr):
        args = rodflow.flows.FlowArgs(problem=p, lr=lr, map=HeavyBall(beta=0.9))
        return flow.vector_field(0.0, flow.init(p.x0, args), args).velocity

    lrs = jnp.array([0.05, 0.1])
    batched = jax.vmap(rhs)(lrs)
    for i, lr in enumerate(lrs):
        np.testing.assert_allclose(batched[i], rhs(lr), rtol=1e-12)


@pytest.mark.parametrize("k", [0.0, 0.5, 1.0, 3.5, 10.0, 500.0])
def test_adam_second_order_coefficients_closed_form(k):
    """Adam with bias correction: `beta_k = beta1 (1 - beta1^k)/(1 - beta1^(k+1))`,
    `lr_k = lr (1 - beta1)/(1 - beta1^(k+1))`; without: `(beta1, lr (1 - beta1))`; RMSProp is
    `beta1 = 0`, heavy ball `(beta, lr)`, GD `(0, lr)`."""
    b1, lr = 0.9, 0.01
    beta, lr_k = rodflow.Adam(beta1=b1).coefficients(lr, k)
    B = 1.0 - b1 ** (k + 1.0)
    assert float(beta) == pytest.approx(b1 * (1.0 - b1**k) / B, rel=1e-12, abs=1e-15)
    assert float(lr_k) == pytest.approx(lr * (1.0 - b1) / B, rel=1e-12)
    assert rodflow.Adam(beta1=b1, bias_correction=False).coefficients(lr, k) == (b1, lr * (1.0 - b1))
    assert rodflow.RMSProp().coefficients(lr, k) == (0.0, lr)
    assert HeavyBall(beta=0.7).coefficients(lr, k) == (0.7, lr)
    assert GradientDescent().coefficients(lr, k) == (0.0, lr)
    if k >= 500:
        assert float(beta) == pytest.approx(b1, rel=1e-12) and float(lr_k) == pytest.approx(lr * (1 - b1))


def test_adam_coefficients_match_optax_moments():
    """On optax's own Adam states: `mu_hat_k = beta_k mu_hat_{k-1} + (lr_k / lr) g(x_k)` exactly
    (`mu_hat_k = mu_k / (1 - beta1^(k+1))`, the first moment after step k), the recursion that
    makes Adam heavy ball with a preconditioner."""
    p = rodflow.problems.get("mlp-digits", n=40, width=8, depth=2)
    lr, b1 = 1e-3, 0.8
    adam = rodflow.Adam(beta1=b1)
    opt = adam.optimizer(lr)
    x, st = p.x0, opt.init(p.x0)
    mu_hat_prev = None
    for k in range(8):
        g = jax.grad(p.loss_flat)(x)
        upd, st = opt.update(g, st, x)
        mu_hat = adam.split(p, adam.pack(p, x, st)).momentum / (1.0 - b1 ** (k + 1))
        if mu_hat_prev is not None:
            beta, lr_k = adam.coefficients(lr, float(k))
            np.testing.assert_allclose(mu_hat, beta * mu_hat_prev + (lr_k / lr) * g, rtol=1e-10, atol=1e-16)
        x, mu_hat_prev = optax.apply_updates(x, upd), mu_hat


def test_adam_first_step_and_preconditioner():
    """The flows start from the optimiser's own first step; the preconditioner is the map's
    (`P = sqrt(nu_hat) + eps`, bias-corrected at the centre's count)."""
    from rodflow.flows._momentum import start_centre

    adam = rodflow.Adam(beta1=0.9, beta2=0.999, eps=1e-8)
    p = _quadratic([0.5, 2.0])
    args = rodflow.flows.FlowArgs(problem=p, lr=jnp.asarray(0.01), map=adam)
    c0, d, nu = start_centre(args, p.x0)
    g = jax.grad(p.loss_flat)(p.x0)
    np.testing.assert_allclose(d, -0.01 * g / (jnp.abs(g) + 1e-8), rtol=1e-9)  # Adam's first step
    np.testing.assert_allclose(c0, p.x0 + 0.5 * d, rtol=1e-12)
    # the flows start at the first centre, whose update uses nu at count 1.5: half a step of
    # nu's ODE on from nu_1 = 0.001 g^2, so that nu_hat = nu / (1 - beta2^1.5) starts as the
    # average of the squared gradients seen (weights 1 and 1/2), not 2/3 of it
    nu1 = 0.001 * g**2
    gc = jax.grad(p.loss_flat)(c0)
    np.testing.assert_allclose(nu, nu1 + 0.5 * 0.001 * (gc**2 - nu1), rtol=1e-12)
    y0 = MomentumStableFlow().init(p.x0, args)
    np.testing.assert_allclose(y0.centre, c0, rtol=1e-12)
    np.testing.assert_allclose(y0.nu, nu, rtol=1e-12)
    nu_hat = y0.nu / (1.0 - 0.999**1.5)
    np.testing.assert_allclose(nu_hat, (g**2 + 0.5 * gc**2) / 1.5, rtol=1e-3)
    np.testing.assert_allclose(adam.preconditioner(y0.nu, 1.5), jnp.sqrt(nu_hat) + 1e-8, rtol=1e-12)
    # the discrete run's preconditioner is the same function, of nu' at count t + 1
    z0 = adam.init_state(p, p.x0, 0.01)
    np.testing.assert_allclose(adam.step_preconditioner(p, z0, 0), jnp.abs(g) + 1e-8, rtol=1e-12)
    # the preconditioned rod curvature is lambda / P along an eigenvector
    flow = MomentumRodFlow()
    y = flow.init(p.x0, args)
    y = y._replace(log_rho=jnp.log(1e-3), direction=jnp.array([0.0, 1.0]))
    P = adam.preconditioner(y.nu, 1.5)
    assert float(flow.curvature(y, args)) == pytest.approx(2.0 / float(P[1]), rel=1e-6)
