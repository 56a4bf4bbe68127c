"""Central Flow for RMSProp and scalar RMSProp: the preconditioned sharpness `lambda_max(P^{-1} H)`
held at `2/lr`, checked against the flow's stationary point on eos-toy, which is known in closed
form up to one scalar equation."""

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rodflow  # noqa: E402
from rodflow.flows import CentralFlow, FlowArgs  # noqa: E402

# eos-toy: L = a/2 (x - x*)^2 + exp(x) y^2 / 2, a = 0.25, x* = 1.8. At y = 0 the Hessian is
# diag(a, exp(x)) and the gradient (a (x - x*), 0).
TOY = rodflow.problems.get("eos-toy")
A_TOY, XSTAR = 0.25, 1.8


def _bisect(F, lo, hi, iters=200):
    """The root of an increasing F on [lo, hi]."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if F(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def stationary_point(opt, lr):
    """`(x, Sigma_yy)` where the central flow stands still with the y-curvature critical.

    x stands still when the gradient balances the drift: `a (x - x*) + Sigma_yy exp(x) / 2 = 0`,
    so `Sigma_yy = 2 a (x* - x) exp(-x)`. `nu` stands still at the oscillation-averaged `g^2`:
    RMSProp `nu_y = exp(2x) Sigma_yy`; scalar RMSProp `nu = (a^2 (x* - x)^2 + exp(2x) Sigma_yy)/2`.
    The constraint `lr * exp(x) / P_y = 2`, `P = sqrt(nu) + eps`, fixes x."""
    a, xs, eps = A_TOY, XSTAR, opt.eps

    def nu_y(x):
        s = 2 * a * (xs - x) * np.exp(x)  # exp(2x) Sigma_yy
        return s if isinstance(opt, rodflow.RMSProp) else 0.5 * (a**2 * (xs - x) ** 2 + s)

    x = _bisect(lambda x: lr * np.exp(x) - 2.0 * (np.sqrt(nu_y(x)) + eps), -5.0, xs)
    return x, 2 * a * (xs - x) * np.exp(-x)


def _integrate(flow, opt, lr, T):
    args = FlowArgs(TOY, jnp.asarray(lr), opt)
    y0 = flow.init(TOY.x0, args)
    sol = diffrax.diffeqsolve(diffrax.ODETerm(flow.vector_field), flow.solver, t0=0.0, t1=T, dt0=flow.dt,
                              y0=y0, args=args, saveat=diffrax.SaveAt(t1=True),
                              max_steps=flow.max_steps(int(T)))
    y = jax.tree.map(lambda a: a[-1], sol.ys)
    return y, flow.sharpness(y, args, y.eigenvectors, T)[0]


@pytest.mark.parametrize("opt", [rodflow.RMSProp(), rodflow.ScalarRMSProp()], ids=["rmsprop", "scalar"])
def test_central_rmsprop_holds_preconditioned_sharpness_at_its_known_stationary_point(opt):
    lr = 0.4
    y, sharp = jax.jit(lambda: _integrate(CentralFlow(), opt, lr, 800.0))()
    x_star, sig_star = stationary_point(opt, lr)
    x, yy = float(y.centre[0]), float(y.centre[1])
    P = np.sqrt(np.asarray(y.nu)) + opt.eps
    P_y = P[-1]
    # lambda_max(P^{-1} H) = exp(x) / P_y sits at the threshold 2/lr
    np.testing.assert_allclose(lr * np.exp(x) / P_y, 2.0, rtol=1e-8)
    np.testing.assert_allclose(float(sharp), 2.0 / lr, rtol=1e-7)
    np.testing.assert_allclose(x, x_star, rtol=1e-5)
    assert abs(yy) < 1e-10
    # Sigma = D U X U^T D with D = P^{-1/2}: along y, Sigma_yy = X / P_y
    X = np.asarray(y.sigma_factor)
    assert X[0, 0] > 0 and np.abs(X).sum() - X[0, 0] < 1e-12
    np.testing.assert_allclose(X[0, 0] / P_y, sig_star, rtol=1e-4)


def test_central_rmsprop_vmap_matches_single_run():
    """A grid of step sizes (as in a sweep) gives each lane its own run: the cone problem and the
    third-derivative terms are gated on any lane, never shared."""
    flow, opt = CentralFlow(), rodflow.RMSProp()
    lrs = jnp.array([0.4, 0.1])
    batched, _ = jax.jit(jax.vmap(lambda lr: _integrate(flow, opt, lr, 40.0)))(lrs)
    for i, lr in enumerate([0.4, 0.1]):
        single, _ = jax.jit(lambda: _integrate(flow, opt, lr, 40.0))()
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(batched)):
            np.testing.assert_allclose(b[i], a, rtol=1e-9, atol=1e-12)


def test_compare_central_rmsprop_runs_beside_the_other_flows():
    r = rodflow.compare(TOY, lr=0.4, steps=120, optimizer=rodflow.RMSProp(), sharpness_every=10,
                        flows=("discrete", "central"), figure=False, progress=False)
    fl = r.metrics["flows"]
    assert fl["central"]["diverged_at"] is None
    assert np.all(np.isfinite(r.series["central"]["dist"]))
    # nu starts near 0, so the run starts far above the threshold (a catapult no flow models);
    # from then on the central flow's own (preconditioned) sharpness stays at or below 2/lr
    S, steps = r.series["central"]["sharpness"], r.series["central"]["sharpness_step"]
    assert S[0] > 2.0 / 0.4
    assert np.max(S[steps >= 30]) <= 2.0 / 0.4 * (1 + 1e-5)
    np.testing.assert_allclose(S[-3:], 2.0 / 0.4, rtol=1e-5)


@pytest.mark.parametrize("opt", [rodflow.RMSProp(), rodflow.ScalarRMSProp()], ids=["rmsprop", "scalar"])
@pytest.mark.parametrize("offset", [0.02, -0.005])
def test_one_substep_lands_on_the_threshold(opt, offset):
    """The cone problem is the linearisation of `lambda_max(P^{-1} H)` along the flow, including
    the motion of `nu` (the oscillation raises it): from a point just above or at the threshold,
    one Euler substep of size `h = dt` lands on `2/lr` up to O(h^2), far closer than where it
    started (one tracked eigenvalue, `k = 1`, where the linearisation is exact)."""
    lr, t = 0.4, 10.0
    flow = CentralFlow(k=1, dt=0.05)
    args = FlowArgs(TOY, jnp.asarray(lr), opt)
    x = 1.0
    w = jnp.array([x, 0.0])
    # nu such that exp(x) / P_y = (2/lr) (1 + offset)
    P_y = lr * np.exp(x) / 2.0 / (1.0 + offset)
    nu_y = (P_y - opt.eps) ** 2
    nu = jnp.array([nu_y]) if opt.scalar else jnp.array([0.05, nu_y])
    y = flow.init(TOY.x0, args)._replace(centre=w, eigenvectors=jnp.array([[0.0], [1.0]]), nu=nu)

    def sharp(y, t):
        return float(flow.sharpness(y, args, y.eigenvectors, t)[0]) * lr / 2.0 - 1.0

    dy = jax.jit(flow.vector_field)(t, y, args)
    assert float(dy.sigma_factor[0, 0]) > 0  # the constraint binds
    y1 = y._replace(centre=w + flow.dt * dy.centre, nu=nu + flow.dt * dy.nu)
    before, after = sharp(y, t), sharp(y1, t + flow.dt)
    np.testing.assert_allclose(before, offset, rtol=1e-6, atol=1e-9)
    assert abs(after) < 0.02 * abs(before)  # measured: 1% (offset 0.02), 0.25% (offset -0.005)


@pytest.mark.parametrize("opt", [rodflow.GradientDescent(), rodflow.RMSProp()], ids=["gd", "rmsprop"])
def test_central_uses_the_step_size_at_its_time_under_a_schedule(opt):
    """Under a schedule the vector field and the recorded predicted loss at time `t` are those
    of the constant step size `lr(t + 1/2)` (the flow models the pair `(z_t, z_{t+1})`)."""
    flow, t = CentralFlow(), 7.0
    sched = lambda k: 0.3 + 0.02 * k  # noqa: E731
    scheduled = FlowArgs(TOY, jnp.asarray(1.0), opt, schedule=sched)
    constant = FlowArgs(TOY, jnp.asarray(sched(t + 0.5)), opt)
    y = flow.init(TOY.x0, constant)._replace(centre=jnp.array([np.log(2.0 / sched(t + 0.5)) + 0.01, 0.05]))
    if opt.name == "rmsprop":  # P_y near exp(x) lr / 2: the y-curvature at its threshold
        y = y._replace(nu=jnp.array([0.05, (0.5 * sched(t + 0.5) * 2.0 / sched(t + 0.5)) ** 2]))
    a, b = flow.vector_field(t, y, scheduled), flow.vector_field(t, y, constant)
    assert float(jnp.abs(b.sigma_factor).max()) > 0  # the constraint binds
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(flow.predicted_loss_at(t, y, scheduled),
                               flow.predicted_loss_at(t, y, constant), rtol=1e-12)
