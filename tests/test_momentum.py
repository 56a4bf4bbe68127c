"""Heavy ball's second-order flows: `stable-momentum` and `rod-momentum`."""

import jax
import jax.numpy as jnp
import numpy as np
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
    y = (y[0], y[1], jnp.log(1e-3), jnp.array([1.0, 0.0]), y[4])  # a rod along the sharp direction
    ds = flow.vector_field(0.0, y, args)[2]
    assert float(ds) == pytest.approx(float(alternating_rate(lr * lam, beta)), rel=1e-6)
    assert float(flow.curvature(y, args)) == pytest.approx(lam, rel=1e-6)


def test_momentum_flows_reject_other_optimizers_and_accept_gd():
    p = rodflow.problems.get("eos-toy")
    with pytest.raises(ValueError, match="Nesterov"):
        rodflow.compare(p, lr=0.1, steps=5, optimizer=Nesterov(), flows=["stable-momentum"], figure=False)
    # GD is heavy ball with beta = 0: the rod grows at log|1 - a| (GD's a - 2 to first order).
    lam, lr = 25.0, 0.1
    q = _quadratic([lam, 1.0])
    args = rodflow.flows.FlowArgs(problem=q, lr=jnp.asarray(lr), map=GradientDescent())
    flow = MomentumRodFlow()
    y = flow.init(q.x0, args)
    y = (y[0], y[1], jnp.log(1e-3), jnp.array([1.0, 0.0]), y[4])
    assert float(flow.vector_field(0.0, y, args)[2]) == pytest.approx(np.log(lr * lam - 1.0), rel=1e-6)


def test_momentum_rod_vmaps_over_lr():
    p = _quadratic([0.5, 2.0])
    flow = MomentumRodFlow()

    def rhs(lr):
        args = rodflow.flows.FlowArgs(problem=p, lr=lr, map=HeavyBall(beta=0.9))
        return flow.vector_field(0.0, flow.init(p.x0, args), args)[1]

    lrs = jnp.array([0.05, 0.1])
    batched = jax.vmap(rhs)(lrs)
    for i, lr in enumerate(lrs):
        np.testing.assert_allclose(batched[i], rhs(lr), rtol=1e-12)


def test_adam_family_coefficients_and_first_step():
    """Adam is heavy ball with momentum `beta1 B(k-1)/B(k)`, step `lr (1 - beta1)/B(k)` and a
    preconditioner; the flows start from the optimiser's own first step."""
    from rodflow.flows._momentum import _Family, _start

    adam = rodflow.Adam(beta1=0.9, beta2=0.999, eps=1e-8)
    fam = _Family.of(adam)
    beta0, lr0 = fam.coefficients(0.01, 0.0)
    assert float(beta0) == pytest.approx(0.0) and float(lr0) == pytest.approx(0.01)  # first step: no momentum
    beta, lr_k = fam.coefficients(0.01, 500.0)
    assert float(beta) == pytest.approx(0.9, rel=1e-9) and float(lr_k) == pytest.approx(0.001, rel=1e-9)
    assert _Family.of(rodflow.RMSProp()).coefficients(0.01, 3.0) == (0.0, 0.01)
    p = _quadratic([0.5, 2.0])
    args = rodflow.flows.FlowArgs(problem=p, lr=jnp.asarray(0.01), map=adam)
    d, nu = _start(args, p.x0)
    g = jax.grad(p.loss_flat)(p.x0)
    np.testing.assert_allclose(d, -0.01 * g / (jnp.abs(g) + 1e-8), rtol=1e-9)  # Adam's first step
    np.testing.assert_allclose(nu, 0.001 * g**2, rtol=1e-9)
    # the flows start at the first centre, whose update uses nu at count 1.5: half a step of
    # nu's ODE on from nu_1, so that nu_hat = nu / (1 - beta2^1.5) starts as the average of the
    # squared gradients seen (weights 1 and 1/2), not 2/3 of it
    c0 = p.x0 + 0.5 * d
    y0 = MomentumStableFlow().init(p.x0, args)
    np.testing.assert_allclose(y0[0], c0, rtol=1e-12)
    gc = jax.grad(p.loss_flat)(c0)
    np.testing.assert_allclose(y0[2], nu + 0.5 * 0.001 * (gc**2 - nu), rtol=1e-12)
    nu_hat = y0[2] / (1.0 - 0.999**1.5)
    np.testing.assert_allclose(nu_hat, (g**2 + 0.5 * gc**2) / 1.5, rtol=1e-3)
    # the preconditioned rod curvature is lambda * P along an eigenvector
    flow = MomentumRodFlow()
    y = flow.init(p.x0, args)
    y = (y[0], y[1], jnp.log(1e-3), jnp.array([0.0, 1.0]), y[4])
    P = fam.precondition(y[4], 0.5)
    assert float(flow.curvature(y, args)) == pytest.approx(2.0 * float(P[1]), rel=1e-6)
