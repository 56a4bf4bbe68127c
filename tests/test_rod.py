"""The rod's maths: exact map, polar form, closed forms on quadratics, variants, kappa."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import rodflow
from rodflow.flows import (
    FlowArgs,
    MomentumRodFlow,
    RodFlow,
    RodState,
    StableFlow,
    rod_map,
    rod_vector_field_cartesian,
)
from rodflow.flows._rod_base import rho_switch_at


def _quadratic(eigs):
    lam = jnp.asarray(eigs, dtype=jnp.float64)
    return rodflow.Problem(lambda x: 0.5 * jnp.sum(lam * x**2), jnp.ones_like(lam))


def _mlp_problem(n=40, width=8):
    return rodflow.problems.get("mlp-digits", n=n, width=width, depth=2)


def _gd_iterates(problem, lr, x0, k):
    opt = optax.sgd(lr)
    xs, x, state = [x0], x0, opt.init(x0)
    for _ in range(k):
        upd, state = opt.update(jax.grad(problem.loss_flat)(x), state, x)
        x = optax.apply_updates(x, upd)
        xs.append(x)
    return xs


def test_gd_map_is_optax_sgd():
    p = _mlp_problem()
    lr = 0.3
    x0 = p.x0
    xs = _gd_iterates(p, lr, x0, 1)
    args = FlowArgs(p, jnp.asarray(lr))
    np.testing.assert_allclose(xs[1], x0 + args.delta(x0), rtol=0, atol=1e-14)


@pytest.mark.parametrize("name,lr", [("mlp", 0.5), ("quartic", 0.2)])
def test_exact_rod_map_reproduces_gd_pairs(name, lr):
    p = _mlp_problem() if name == "mlp" else rodflow.problems.get("quartic")
    xs = _gd_iterates(p, lr, p.x0, 12)
    args = FlowArgs(p, jnp.asarray(lr))
    for k in range(10):
        c = 0.5 * (xs[k] + xs[k + 1])
        r = 0.5 * (xs[k + 1] - xs[k])
        c1, r1 = rod_map(args.delta, c, r)
        # an identity up to rounding, which scales with the iterates (GD at lr 0.5 on the MLP
        # is unstable: they grow to ~1e3 within these steps)
        tol = 1e-12 * max(1.0, float(np.max(np.abs(np.asarray(xs[k: k + 3])))))
        np.testing.assert_allclose(c1, 0.5 * (xs[k + 1] + xs[k + 2]), atol=tol)
        # r' = -(x_{k+2} - x_{k+1})/2: the sign flips each step (r is defined up to sign).
        np.testing.assert_allclose(-r1, 0.5 * (xs[k + 2] - xs[k + 1]), atol=tol)
        # ... and the ends of the new rod are GD's next pair.
        np.testing.assert_allclose(c1 + r1, xs[k + 1], atol=tol)
        np.testing.assert_allclose(c1 - r1, xs[k + 2], atol=tol)


def test_polar_vector_field_equals_cartesian():
    p = _mlp_problem()
    lr = 0.4
    args = FlowArgs(p, jnp.asarray(lr))
    key1, key2 = jr.split(jr.PRNGKey(1))
    c = p.x0 + 0.1 * jr.normal(key1, p.x0.shape)
    v = jr.normal(key2, p.x0.shape)
    v = v / jnp.linalg.norm(v)
    for rho in (1e-1, 3e-3):
        flow = RodFlow()
        dc, ds, dv, dnu = flow.vector_field(0.0, RodState(c, jnp.log(rho), v, None), args)
        assert dnu is None
        dc_cart, dr_cart = rod_vector_field_cartesian(args.delta, c, rho * v)
        np.testing.assert_allclose(dc, dc_cart, rtol=1e-9, atol=1e-12)
        # r = rho v  =>  dr/dt = rho (ds/dt v + dv/dt)
        np.testing.assert_allclose(rho * (ds * v + dv), dr_cart, rtol=1e-8, atol=1e-12)


def _integrate(flow, y0, args, t1, n_save=None):
    ts = jnp.linspace(0.0, t1, n_save) if n_save else None
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(flow.vector_field), diffrax.Tsit5(), 0.0, t1, 0.05, y0, args,
        saveat=diffrax.SaveAt(ts=ts) if n_save else diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12), max_steps=100_000,
    )
    return sol.ys if n_save else jax.tree.map(lambda a: a[-1], sol.ys)


@pytest.mark.parametrize("lr", [0.05, 0.1])
def test_quadratic_closed_form(lr):
    """Rod along an eigenvector e_j: rho(t) = rho0 exp((eta lam_j - 2) t), c_i(t) = c_i e^{-eta lam_i t}."""
    eigs = jnp.array([1.0, 10.0, 30.0])
    p = _quadratic(eigs)
    args = FlowArgs(p, jnp.asarray(lr))
    flow = RodFlow(eps_floor=0.0)
    c0 = jnp.array([1.0, -0.5, 0.3])
    v0 = jnp.array([0.0, 0.0, 1.0])
    rho0 = 1e-2
    ts = jnp.linspace(0.0, 5.0, 6)
    c, s, v, _ = _integrate(flow, RodState(c0, jnp.log(rho0), v0, None), args, 5.0, n_save=6)
    np.testing.assert_allclose(jnp.exp(s), rho0 * jnp.exp((lr * 30.0 - 2.0) * ts), rtol=1e-7)
    np.testing.assert_allclose(c, c0 * jnp.exp(-lr * eigs[None, :] * ts[:, None]), rtol=1e-7,
                               atol=1e-12)
    np.testing.assert_allclose(v[:, 2], 1.0, rtol=1e-9)


def test_rod_grows_iff_above_threshold_vmapped():
    """Across a vmapped sweep over lr, the rod grows exactly when lr * lambda_max > 2."""
    p = _quadratic([2.0, 20.0])
    lrs = jnp.array([0.05, 0.08, 0.095, 0.105, 0.12, 0.2])
    flow = RodFlow(eps_floor=0.0)

    def final_log_rho(lr):
        args = FlowArgs(p, lr)
        y0 = flow.init(p.x0, args)
        return _integrate(flow, y0, args, 4.0).log_rho - y0.log_rho

    growth = jax.vmap(final_log_rho)(lrs)
    assert np.array_equal(np.asarray(growth > 0), np.asarray(lrs * 20.0 > 2.0))


def test_kappa_converges_to_top_eigenvalue():
    p = _quadratic([1.0, 10.0, 30.0])
    lr = 0.06
    args = FlowArgs(p, jnp.asarray(lr))
    flow = RodFlow()
    v0 = jnp.array([1.0, 1.0, 1e-3])
    y = RodState(jnp.array([1.0, 1.0, 1.0]), jnp.log(1e-3), v0 / jnp.linalg.norm(v0), None)
    y1 = _integrate(flow, y, args, 60.0)
    assert abs(float(flow.curvature(y1, args)) - 30.0) < 1e-6


def test_taylor_and_exact_agree_for_small_rods():
    p = _mlp_problem()
    args = FlowArgs(p, jnp.asarray(0.3))
    key1, key2 = jr.split(jr.PRNGKey(3))
    c = p.x0 + 0.1 * jr.normal(key1, p.x0.shape)
    v = jr.normal(key2, p.x0.shape)
    v = v / jnp.linalg.norm(v)
    errs = []
    for rho in (1e-1, 3e-2, 1e-2):
        y = RodState(c, jnp.log(rho), v, None)
        ex = RodFlow(variant="exact").vector_field(0.0, y, args).centre
        ta = RodFlow(variant="taylor").vector_field(0.0, y, args).centre
        errs.append(float(jnp.linalg.norm(ex - ta) / jnp.linalg.norm(ex)))
        # the rod-curvature term matters: dropping it is worse than keeping it
        plain = args.delta(c)
        assert errs[-1] < float(jnp.linalg.norm(ex - plain) / jnp.linalg.norm(ex))
    # the Taylor drift is exact to O(rho^2): the difference falls at least like rho^3
    assert errs[2] < errs[0] * (1e-2 / 1e-1) ** 3 * 5
    assert errs[2] < 1e-6


def test_small_rho_branch_matches_finite_differences():
    """Both branches of the exact variant: just above and below rho_switch they agree."""
    p = _mlp_problem()
    args = FlowArgs(p, jnp.asarray(0.3))
    c = p.x0
    v = jr.normal(jr.PRNGKey(5), c.shape)
    v = v / jnp.linalg.norm(v)
    flow = RodFlow()
    switch = float(rho_switch_at(c))
    assert switch == pytest.approx(np.sqrt(np.finfo(np.float64).eps) * (1.0 + float(jnp.linalg.norm(c))))
    above = flow.vector_field(0.0, RodState(c, jnp.log(switch * 1.01), v, None), args)
    below = flow.vector_field(0.0, RodState(c, jnp.log(switch * 0.99), v, None), args)
    for a, b in zip(above[:3], below[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    # the HVP branch is what a plain finite difference would give at a comfortable rho
    fd = RodFlow(rho_switch=0.0).vector_field(0.0, RodState(c, jnp.log(1e-4), v, None), args)
    hv = RodFlow(rho_switch=1.0).vector_field(0.0, RodState(c, jnp.log(1e-4), v, None), args)
    np.testing.assert_allclose(fd.log_rho, hv.log_rho, rtol=1e-6)
    np.testing.assert_allclose(fd.direction, hv.direction, rtol=1e-5, atol=1e-9)


def test_noise_floor_holds_log_rho():
    p = _quadratic([1.0, 2.0])
    args = FlowArgs(p, jnp.asarray(0.1))
    flow = RodFlow()
    c = jnp.array([1.0, 1.0])
    v = jnp.array([1.0, 0.0])
    s_min = flow.log_floor(c, v)
    y = RodState(c, s_min - 1.0, v, None)
    assert flow.vector_field(0.0, y, args).log_rho == 0.0
    assert RodFlow(eps_floor=0.0).vector_field(0.0, y, args).log_rho < 0.0


def test_rounding_floor_is_the_rounding_error_along_the_rod():
    # float32 centre: each coordinate's ulp from numpy, round to nearest -> std ulp / sqrt(12)
    c = jnp.array([1.0, 3.0, -1e-3, 0.0, 200.0], jnp.float32)
    v = jnp.array([1.0, 2.0, 0.0, 0.0, 2.0], jnp.float32) / 3.0
    ulp = np.spacing(np.abs(np.asarray(c)))
    want = np.sqrt(np.sum(np.asarray(v, np.float64) ** 2 * ulp.astype(np.float64) ** 2) / 12.0)
    flow = RodFlow(floor="rounding")
    np.testing.assert_allclose(float(jnp.exp(flow.log_floor(c, v))), want, rtol=1e-5)
    # along a coordinate at 1.0 the error is eps / sqrt(12); an unnormalised v gives the same
    e1 = jnp.zeros(5, jnp.float32).at[0].set(1.0)
    np.testing.assert_allclose(float(jnp.exp(flow.log_floor(c, 7.0 * e1))),
                               np.finfo(np.float32).eps / np.sqrt(12.0), rtol=1e-6)
    # the default floor is eps |c|, whatever the direction
    np.testing.assert_allclose(float(jnp.exp(RodFlow().log_floor(c, v))),
                               np.finfo(np.float32).eps * np.linalg.norm(np.asarray(c)), rtol=1e-5)
    assert RodFlow(floor="rounding", eps_floor=0.0).log_floor(c, v) == -np.inf


def test_rounding_floor_holds_log_rho():
    p = _quadratic([1.0, 2.0])
    args = FlowArgs(p, jnp.asarray(0.1))
    flow = RodFlow(floor="rounding")
    c, v = jnp.array([1.0, 1.0]), jnp.array([1.0, 0.0])
    s_min = flow.log_floor(c, v)
    assert s_min < RodFlow().log_floor(c, v) - 1.0  # below eps |c| along one coordinate of two
    assert flow.vector_field(0.0, RodState(c, s_min - 1.0, v, None), args).log_rho == 0.0
    assert flow.vector_field(0.0, RodState(c, s_min + 1.0, v, None), args).log_rho < 0.0


@pytest.mark.parametrize("kw", [dict(floor="ulp"), dict(floor="rounding", eps_floor=1e-6)])
def test_floor_options_are_checked(kw):
    for cls in (RodFlow, MomentumRodFlow):  # jaxtyping may reject a value outside the Literal first
        with pytest.raises((ValueError, TypeError), match="floor"):
            cls(**kw)


def test_rounding_floor_follows_the_dtype_of_gd():
    # eos-toy: the oscillating coordinate y has its centre at ~0, where float32 rounds as finely
    # as float64, so GD's noise along the rod is the same in both; the 'rounding' rod regrows
    # from the same level in both dtypes, the 'eps' rod from eps32 |c| (earlier in float32)
    p64 = rodflow.problems.get("eos-toy")
    p32 = p64.with_params0(p64.params0.astype(jnp.float32))

    def regrowth(p, floor):
        r = rodflow.compare(p, lr=0.4, steps=120, flows={"rod": RodFlow(floor=floor)}, figure=False)
        step, rho = np.asarray(r.series["rod"]["step"]), np.asarray(r.series["rod"]["rho"])
        return int(step[np.argmax((step >= 20) & (rho > 1e-2))])  # after the first rod decays

    assert abs(regrowth(p32, "rounding") - regrowth(p64, "rounding")) <= 1
    assert regrowth(p32, "eps") < regrowth(p64, "eps") - 4


def test_map_growth_is_the_rod_maps_growth_where_the_rod_keeps_its_orientation():
    from rodflow.flows._rod import map_growth

    # quadratic, v an eigenvector: M = -eta lambda v, q = -eta lambda, one map step multiplies
    # the rod by eta lambda - 1 (orientation kept when eta lambda > 1, flipped below)
    zero = jnp.zeros(3)
    for x in (1.05, 1.5, 2.0, 2.4, 4.0):
        np.testing.assert_allclose(float(map_growth(jnp.asarray(-x), zero)), np.log(x - 1.0), rtol=1e-12)
    for x in (-0.5, 0.0, 0.3, 0.6):  # smooth directions: the paper's rate, whose Euler step is the flip
        assert float(map_growth(jnp.asarray(-x), zero)) == pytest.approx(x - 2.0, rel=1e-12)
    # near the annihilation eta lambda = 1 from the flipping side, the exact decay is the faster
    assert float(map_growth(jnp.asarray(-0.95), zero)) == pytest.approx(np.log(0.05), rel=1e-12)
    # continuous where the two rates cross (eta lambda ~ 0.72): steps of 0.001 move it < 0.011
    g = jax.vmap(lambda x: map_growth(-x, zero))(jnp.linspace(-1.0, 0.9, 1901))
    assert float(jnp.max(jnp.abs(jnp.diff(g)))) < 0.011


def test_map_growth_carries_gds_decay_through_the_annihilation():
    # eos-toy: GD's sharpness exp(x) rises through eta lambda = 1, where one step of GD nearly
    # annihilates y, to the threshold near step 21. GD's oscillation along y when it crosses
    # (|y_{k+1} - y_k| / 2 at step 22) sets when the first catapult comes; the map-growth rods
    # carry it to within a few times GD's, the paper's linear growth leaves it about 100x too large.
    problem = rodflow.problems.get("eos-toy")
    lr, k = 0.4, 22
    x = problem.x0
    xs = [x]
    for _ in range(k + 1):
        x = x - lr * jax.grad(problem.loss_flat)(x)
        xs.append(x)
    gd = abs(float(xs[k + 1][1] - xs[k][1])) / 2
    flows = {"linear": RodFlow(), "map": RodFlow(growth="map"), "order2": RodFlow(order=2)}
    r = rodflow.compare(problem, lr=lr, steps=30, flows=flows, figure=False)
    rho = {f: float(np.asarray(r.series[f]["rho"])[np.asarray(r.series[f]["step"]) == k][0]) for f in flows}
    assert rho["linear"] > 30 * gd
    for f in ("map", "order2"):
        assert gd / 4 < rho[f] < 4 * gd, (f, rho[f], gd)


def test_linear_growth_is_the_papers_rate_up_to_its_guard():
    from rodflow.flows._rod import GROWTH_GUARD, linear_growth

    # quadratic, v an eigenvector (q = -eta lambda): bit for bit -2 - q up to GROWTH_GUARD = 3
    # per step (eta lambda <= 5), then held at 3 until the map's growth log(eta lambda - 1)
    # exceeds it (eta lambda = 1 + e^3), which it follows above; never above the paper's rate
    zero = jnp.zeros(3)
    x = jnp.concatenate([jnp.linspace(-1.0, 5.0, 6001), jnp.asarray([1.0 + np.e**3])])
    g = np.asarray(jax.vmap(lambda x: linear_growth(-x, zero))(x))
    lin = np.asarray(-2.0 - (-x))
    below = np.asarray(x) <= 2.0 + GROWTH_GUARD
    assert GROWTH_GUARD == 3.0 and np.array_equal(g[below], lin[below])
    for xi in (6.0, 8.0, 1.0 + np.e**3 - 1e-6):
        assert float(linear_growth(jnp.asarray(-xi), zero)) == 3.0
    for xi in (1.0 + np.e**3 + 0.5, 40.0):
        np.testing.assert_allclose(float(linear_growth(jnp.asarray(-xi), zero)), np.log(xi - 1.0), rtol=1e-12)
        assert float(linear_growth(jnp.asarray(-xi), zero)) < xi - 2.0
    xs = jnp.linspace(4.0, 30.0, 26001)  # continuous: steps of 0.001 move it by at most 0.001
    assert float(jnp.max(jnp.abs(jnp.diff(jax.vmap(lambda x: linear_growth(-x, zero))(xs))))) <= 1.0001e-3


@pytest.mark.parametrize("guarded", [True, False])
def test_default_rod_survives_a_catapult_from_initialisation(guarded, monkeypatch):
    # eos-toy started at sharpness e^3 = 20 (4x the threshold 2/lr = 5): GD's oscillation grows
    # by |lr e^x - 1| <= 7 per step, pushes x down and settles. The paper's linear rate (the
    # guard off) grows the rod by e^6 per step and makes it non-finite within 3 steps; with the guard
    # the default rod stays finite through the catapult and follows GD's centre afterwards.
    from rodflow.flows import _rod

    p = rodflow.problems.get("eos-toy", x0="3.0,0.01")
    if not guarded:
        monkeypatch.setattr(_rod, "GROWTH_GUARD", float("inf"))
        jax.clear_caches()  # the compiled rod read the guard when it was traced
        try:
            r = rodflow.compare(p, lr=0.4, steps=300, sharpness_every=5, flows=("rod",), figure=False)
        finally:
            jax.clear_caches()
        assert np.all(np.isfinite(r.series["discrete"]["loss"]))
        assert r.metrics["flows"]["rod"]["diverged_at"] <= 3  # step 3 in float64 (the tests), 2 in float32
        return
    r = rodflow.compare(p, lr=0.4, steps=300, sharpness_every=5, flows=("stable", "rod"), figure=False)
    assert float(r.series["discrete"]["sharpness"][0]) > 4 * 5.0
    assert np.all(np.isfinite(r.series["discrete"]["loss"]))
    rod, stable = r.metrics["flows"]["rod"], r.metrics["flows"]["stable"]
    assert rod.get("diverged_at") is None and np.all(np.isfinite(r.series["rod"]["rel_dist"][1:]))
    assert rod["rel_dist_mean_eos"] < stable["rel_dist_mean_eos"]


@pytest.mark.parametrize("kw", [dict(growth="exact"), dict(order=2, growth="linear")])
def test_growth_options_are_checked(kw):
    with pytest.raises((ValueError, TypeError), match="growth"):
        RodFlow(**kw)


def test_vector_field_jit_matches_no_jit():
    p = _mlp_problem()
    args = FlowArgs(p, jnp.asarray(0.3))
    flow = RodFlow()
    y = flow.init(p.x0, args)
    a = flow.vector_field(0.0, y, args)
    b = eqx.filter_jit(flow.vector_field)(0.0, y, args)
    for u, w in zip(a[:3], b[:3]):  # nu is None (no smooth second moment)
        np.testing.assert_allclose(u, w, rtol=1e-12, atol=1e-14)


def test_initial_condition():
    p = _mlp_problem()
    lr = 0.2
    args = FlowArgs(p, jnp.asarray(lr))
    x0 = p.x0
    g = jax.grad(p.loss_flat)(x0)
    c, s, v, nu = RodFlow().init(x0, args)
    assert nu is None  # GD: no second moment
    np.testing.assert_allclose(c, x0 - 0.5 * lr * g, atol=1e-14)
    np.testing.assert_allclose(jnp.exp(s), 0.5 * lr * jnp.linalg.norm(g), rtol=1e-12)
    np.testing.assert_allclose(v, -g / jnp.linalg.norm(g), atol=1e-12)


def _entry_computation(hlo: str) -> str:
    """The ENTRY computation of an optimised HLO module's text (from `ENTRY` to the first line
    that is a lone closing brace)."""
    import re

    start = re.search(r"^ENTRY ", hlo, re.M).start()
    return hlo[start:re.compile(r"^\}\s*$", re.M).search(hlo, start).start()]


@pytest.mark.skipif(jax.default_backend() not in ("cpu", "gpu"),
                    reason="the marker is eigh's LAPACK/cuSOLVER custom call")
@pytest.mark.parametrize("lanes", [1, 3])  # one lane runs unbatched; three are vmapped (named axis)
def test_branch_leaves_an_unneeded_side_inside_its_conditional(lanes):
    """The work of a side sits in a branch of the compiled `conditional`, not in the program's
    entry: an earlier one-iteration `while_loop` gate let XLA hoist its loop-invariant side out
    of the loop, so the side ran on every call (the eigensolver's power-iteration fallback ran
    after every LOBPCG call). Marker: `eigh`, a LAPACK custom call on the CPU. Outside a sweep
    the side is compiled once (a third, both-sides branch doubled Central Flow's compile work)."""
    from rodflow._chunks import over_grid
    from rodflow._lax import branch

    def f(x):
        M = jnp.outer(x, x) + jnp.eye(x.shape[0])
        return branch(x[0] > 100.0, lambda: jnp.linalg.eigh(M)[0], lambda: x)

    xs = jnp.tile(jnp.arange(1.0, 9.0), (lanes, 1))
    compiled = jax.jit(lambda xs: over_grid(f, xs)).lower(xs).compile()
    hlo = compiled.as_text()
    assert "custom-call" in hlo and "conditional" in hlo  # eigh is compiled, behind a cond
    assert "custom-call" not in _entry_computation(hlo)
    np.testing.assert_array_equal(compiled(xs), xs)  # no lane needed the eigh side
    # a single run (a grid of one) is a plain cond: its side compiled once; a sweep's grid
    # also compiles the side that runs both (the eigh twice)
    assert hlo.count("custom-call(") == (1 if lanes == 1 else 2)


def test_smooth_nu_without_second_moment_is_the_plain_rod():
    """For a map without second moments (GD), `smooth_nu` carries an empty `nu`: same numbers."""
    p = _mlp_problem()
    args = FlowArgs(p, jnp.asarray(0.3))
    plain, smooth = RodFlow(), RodFlow(smooth_nu=True)
    y, ys = plain.init(p.x0, args), smooth.init(p.x0, args)
    assert ys.nu.shape == (0,)
    np.testing.assert_array_equal(smooth.centre(ys), plain.centre(y))
    a, b = plain.vector_field(0.0, y, args), smooth.vector_field(0.0, ys, args)
    for u, w in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(u, w)


def test_rod_flows_are_final_and_declare_requirements():
    from rodflow.flows import AbstractRodFlow

    assert issubclass(RodFlow, AbstractRodFlow) and issubclass(MomentumRodFlow, AbstractRodFlow)
    with pytest.raises(TypeError, match="concrete"):
        type("MyRod", (RodFlow,), {"__module__": __name__})
    assert RodFlow.requires == () and StableFlow.requires == ()
    assert RodFlow().unsupported(rodflow.Nesterov()) is None


@pytest.mark.parametrize("solver,n", [(diffrax.Euler(), 1), (diffrax.Heun(), 2), (diffrax.Midpoint(), 2),
                                      (diffrax.Ralston(), 2), (diffrax.Bosh3(), 3), (diffrax.Tsit5(), 6),
                                      (diffrax.Dopri5(), 6), (diffrax.Dopri8(), 13)])
def test_evals_per_step_from_the_tableau(solver, n):
    """Vector-field evaluations per step: the tableau's stages, less one for FSAL solvers."""
    assert RodFlow(solver=solver).evals_per_step() == n
