"""Optimisers with state (issue 6): maps on z = (params, state), exact rod map, thresholds."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rodflow
from rodflow import make_map
from rodflow._maps import (
    AbstractMap,
    AbstractMomentumMap,
    AbstractPlainGradientMap,
    AbstractPreconditionedMap,
    Adam,
    AdamW,
    GradientDescent,
    HeavyBall,
    MapState,
    NAdam,
    Nesterov,
    OptaxMap,
    RMSProp,
    ScalarAdam,
    ScalarRMSProp,
    scale_by_moments,
    transient_steps,
)
from rodflow.cli import main
from rodflow.flows import (
    CentralFlow,
    FlowArgs,
    MomentumRodFlow,
    MomentumStableFlow,
    RodFlow,
    StableFlow,
    rod_map,
)

# every optimiser, with and without bias correction where it has one
ALL_MAPS = {
    "gd": GradientDescent(),
    "heavy-ball": HeavyBall(beta=0.8),
    "nesterov": Nesterov(beta=0.8),
    "rmsprop": RMSProp(),
    "rmsprop-bc": RMSProp(bias_correction=True),
    "adam": Adam(),
    "adam-nobc": Adam(bias_correction=False),
    "nadam": NAdam(),
    "nadam-nobc": NAdam(bias_correction=False),
    "scalar-rmsprop": ScalarRMSProp(),
    "scalar-adam": ScalarAdam(),
    "scalar-adam-nobc": ScalarAdam(bias_correction=False),
    "adamw": AdamW(weight_decay=0.1),
    "adamw-nobc": AdamW(weight_decay=0.1, bias_correction=False),
    "optax-factory": OptaxMap(factory=lambda lr: optax.sgd(lr, momentum=0.5, nesterov=True)),
}
LRS = {"gd": 0.3, "heavy-ball": 0.1, "nesterov": 0.1, "optax-factory": 0.1}


def _problem():
    return rodflow.problems.get("mlp-digits", n=40, width=8, depth=2)


def _states(problem, m, lr, k):
    """`k + 1` consecutive states z_0..z_k of the optax optimiser itself, packed."""
    opt = m.optimizer(lr)
    x, st = problem.x0, opt.init(problem.x0)
    zs = [m.pack(problem, x, st)]
    for _ in range(k):
        upd, st = opt.update(jax.grad(problem.loss_flat)(x), st, x)
        x = optax.apply_updates(x, upd)
        zs.append(m.pack(problem, x, st))
    return zs


@pytest.mark.parametrize("name", list(ALL_MAPS))
def test_delta_is_one_optax_step(name):
    """`z_k + delta(z_k, k)` is the optax optimiser's next state (bias correction via t = k)."""
    p, m = _problem(), ALL_MAPS[name]
    lr = LRS.get(name, 1e-3)
    zs = _states(p, m, lr, 6)
    for k in range(6):
        np.testing.assert_allclose(zs[k] + m.delta(p, zs[k], lr, k), zs[k + 1], rtol=0, atol=1e-13)
    assert m.params(p, zs[3]).shape == (p.dim,)


@pytest.mark.parametrize(
    "name", [n for n in ALL_MAPS if n not in ("adam", "nadam", "rmsprop-bc", "scalar-adam", "adamw")]
)
def test_exact_rod_map_on_consecutive_states(name):
    """§2: c = (z_k + z_{k+1})/2, r = (z_{k+1} - z_k)/2 -> the next pair, for every time-independent
    map (bias-corrected maps depend on the step; their rod map is exact only as t -> inf)."""
    p, m = _problem(), ALL_MAPS[name]
    lr = LRS.get(name, 1e-3)
    zs = _states(p, m, lr, 10)
    for k in range(8):
        c, r = 0.5 * (zs[k] + zs[k + 1]), 0.5 * (zs[k + 1] - zs[k])
        c1, r1 = rod_map(lambda z: m.delta(p, z, lr), c, r)
        np.testing.assert_allclose(c1 + r1, zs[k + 1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(c1 - r1, zs[k + 2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["adam", "nadam", "rmsprop-bc", "scalar-adam", "adamw"])
def test_bias_corrected_rod_map_with_time(name):
    """With bias correction the map changes between steps t and t+1; the rod map evaluated at the
    single time t + 1/2 then has a defect that fades as the bias correction does (measured on
    this problem: 5.5% of the step at k = 2 for RMSProp (beta2 0.99), 0.6% at k = 35; Adam and
    NAdam (beta1 0.9, beta2 0.999) 0.2-0.3% at both)."""
    p, m = _problem(), ALL_MAPS[name]
    lr = 1e-3
    zs = _states(p, m, lr, 40)
    errs = []
    for k in (2, 35):
        c, r = 0.5 * (zs[k] + zs[k + 1]), 0.5 * (zs[k + 1] - zs[k])
        c1, r1 = rod_map(lambda z: m.delta(p, z, lr, k + 0.5), c, r)
        scale = jnp.linalg.norm(zs[k + 2] - zs[k + 1])
        errs.append(float(jnp.linalg.norm(c1 - r1 - zs[k + 2]) / scale))
    assert errs[0] < 0.1 and errs[1] < 0.01, errs


@pytest.mark.parametrize("nesterov,builtin", [(False, "adam"), (True, "nadam"), (None, "rmsprop")])
def test_custom_moments_match_optax(nesterov, builtin):
    x = jnp.linspace(-1.0, 1.0, 7)
    if builtin == "rmsprop":
        ref = optax.rmsprop(0.01, decay=0.99, eps=1e-8, eps_in_sqrt=False, bias_correction=True)
        mine = optax.chain(scale_by_moments(0.0, 0.99, 1e-8), optax.scale_by_learning_rate(0.01))
    else:
        ref = getattr(optax, builtin)(0.01, b1=0.9, b2=0.999, eps=1e-8)
        mine = optax.chain(
            scale_by_moments(0.9, 0.999, 1e-8, nesterov=nesterov), optax.scale_by_learning_rate(0.01)
        )
    s1, s2 = ref.init(x), mine.init(x)
    for k in range(5):
        g = jnp.sin(3.0 * x + k)
        u1, s1 = ref.update(g, s1, x)
        u2, s2 = mine.update(g, s2, x)
        np.testing.assert_allclose(u1, u2, rtol=1e-12, atol=1e-15)


THRESH_MAPS = {
    "gd": GradientDescent(),
    "heavy-ball": HeavyBall(beta=0.7),
    "nesterov": Nesterov(beta=0.7),
    "rmsprop": RMSProp(),
    "adam": Adam(beta1=0.8, bias_correction=False),
    "nadam": NAdam(beta1=0.8, bias_correction=False),
    "scalar-rmsprop": ScalarRMSProp(),
    "scalar-adam": ScalarAdam(bias_correction=False),
    # lr * wd = 0.2: the decay lowers the threshold by wd (1 + beta1)/(1 - beta1) = 9 wd = 180,
    # not by wd (which would put the threshold inside the 3% band tested here)
    "adamw": AdamW(beta1=0.8, bias_correction=False, weight_decay=20.0),
    "optax-sgd": OptaxMap(factory=optax.sgd),
}


@pytest.mark.parametrize("name", list(THRESH_MAPS))
@pytest.mark.parametrize("frac", [0.97, 1.03])
def test_threshold_matches_linear_stability(name, frac):
    """On L = lam x^2 / 2 at the minimum, the spectral radius of the Jacobian of F on the whole
    state z is < 1 iff the effective sharpness is below `threshold(lr)`."""
    m, lr = THRESH_MAPS[name], 0.01

    def setup(lam):
        p = rodflow.Problem(lambda x: 0.5 * lam * jnp.sum(x**2), jnp.zeros(1))
        z = m.init_state(p, p.x0, lr)
        if isinstance(m, AbstractPreconditionedMap):  # a positive second moment (g(0) = 0)
            state = m.split(p, z)
            z = m.join(state._replace(nu=jnp.full_like(state.nu, 0.3)))
        return p, z

    p, z = setup(1.0)
    s1 = float(m.sharpness(p, z, lr, jnp.ones((1, 1)))[0][0])
    lam = frac * float(m.threshold(lr)) / s1
    p, z = setup(lam)
    s = float(m.sharpness(p, z, lr, jnp.ones((1, 1)))[0][0])
    assert s / float(m.threshold(lr)) == pytest.approx(frac, rel=1e-9)
    J = jnp.eye(z.shape[0]) + jax.jacfwd(lambda z_: m.delta(p, z_, lr))(z)
    rho = float(np.max(np.abs(np.linalg.eigvals(np.asarray(J)))))
    assert (rho < 1.0) == (frac < 1.0), (rho, frac)


# eos-toy, written out by hand: L = a/2 (x - x*)^2 + exp(x) y^2 / 2
A_TOY, XSTAR_TOY = 0.25, 1.8


def _toy_loss(p):
    x, y = p[..., 0], p[..., 1]
    return 0.5 * A_TOY * (x - XSTAR_TOY) ** 2 + 0.5 * np.exp(x) * y**2


def _toy_grad(p):
    x, y = p
    return np.array([A_TOY * (x - XSTAR_TOY) + 0.5 * np.exp(x) * y**2, np.exp(x) * y])


def _toy_sharpness(p):
    x, y = p
    e = np.exp(x)
    return np.linalg.eigvalsh(np.array([[A_TOY + 0.5 * e * y**2, e * y], [e * y, e]]))[-1]


def test_default_optimizer_is_hand_written_gd():
    """`optimizer=None` runs gradient descent: against `x_{k+1} = x_k - lr grad L(x_k)` in numpy
    with the toy's gradient and Hessian written out, the discrete run's losses, iterates
    (snapshots and final), centres' displacements, sharpness (closed-form top eigenvalue of the
    2x2 Hessian) and EoS onset agree to rounding; the stable flow is gradient flow
    `dw/dt = -lr grad L(w)` from `m_0` (scipy's DOP853 at rtol 1e-12 as the reference); and the
    generic optax path (`OptaxMap(optax.sgd)`) gives the same metrics."""
    from scipy.integrate import solve_ivp

    lr, N = 0.4, 400
    p = rodflow.problems.get("eos-toy")
    ref = rodflow.compare(p, lr=lr, steps=N, save_every=10, figure=False)
    assert ref.metrics["optimizer"] == "gd" and ref.metrics["threshold"] == pytest.approx(2 / lr, rel=1e-15)
    xs = [np.array([0.0, 0.1])]
    for _ in range(N + 1):
        xs.append(xs[-1] - lr * _toy_grad(xs[-1]))
    xs = np.array(xs)
    d = ref.series["discrete"]
    np.testing.assert_allclose(d["loss"], _toy_loss(xs[: N + 1]), rtol=1e-12, atol=0)
    np.testing.assert_allclose(d["loss_next"], _toy_loss(xs[1 : N + 2]), rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.asarray(ref.final["discrete"]), xs[N], rtol=0, atol=1e-13)
    snap_steps, snaps = ref.snapshots["discrete"]
    np.testing.assert_array_equal(snap_steps, np.arange(0, N + 1, 10))
    np.testing.assert_allclose(snaps, xs[snap_steps], rtol=0, atol=1e-13)
    m = 0.5 * (xs[:-1] + xs[1:])  # GD's centres m_k
    np.testing.assert_allclose(d["disp"], np.linalg.norm(m - m[0], axis=1), rtol=0, atol=1e-13)
    sharp = np.array([_toy_sharpness(xs[k]) for k in d["sharpness_step"]])
    np.testing.assert_allclose(d["sharpness"], sharp, rtol=1e-10)
    onset = int(d["sharpness_step"][np.argmax(sharp > 2 / lr)])
    assert sharp[0] < 2 / lr and ref.metrics["eos_onset_step"] == onset > 0
    assert ref.metrics["eos_onset_rule"] == "crossing"

    # the stable flow: gradient flow from m_0, integrated by Tsit5 at rtol 1e-6 / atol 1e-9. The
    # flow contracts towards (x*, 0), so the global error stays of the order of the local
    # tolerance times |w| <= 2: 1e-5 allows a factor 5 on that.
    gf = solve_ivp(lambda t, w: -lr * _toy_grad(w), (0.0, N), m[0], method="DOP853", rtol=1e-12,
                   atol=1e-14, dense_output=True).sol(np.arange(N + 1)).T
    s = ref.series["stable"]
    np.testing.assert_allclose(s["dist"], np.linalg.norm(gf - m, axis=1), rtol=0, atol=1e-5)
    np.testing.assert_allclose(s["loss"], _toy_loss(gf), rtol=0, atol=1e-5)
    np.testing.assert_allclose(ref.snapshots["stable"][1], gf[ref.snapshots["stable"][0]], rtol=0, atol=1e-5)

    generic = rodflow.compare(p, lr=lr, steps=N, optimizer=OptaxMap(factory=optax.sgd), figure=False)
    np.testing.assert_allclose(generic.series["discrete"]["loss"], d["loss"], rtol=1e-12, atol=0)
    for name in ("discrete", "stable", "rod"):
        for key, v in ref.metrics["flows"][name].items():
            if isinstance(v, float) and key not in ("wall_s", "compile_s"):
                got = generic.metrics["flows"][name][key]
                assert got == pytest.approx(v, rel=1e-8, abs=1e-12), (name, key)
    assert generic.metrics["eos_onset_step"] == onset


def test_heavy_ball_eos_toy_rod_tracks_better():
    """Heavy ball (beta 0.5, threshold 3/lr = 5) at its edge of stability on the EoS toy.

    The stated target (the issue, README "pass (<= 0.5)") is a rod tracking error during EoS at
    most half the stable flow's. NOT met here: measured rod 0.373 vs stable 0.430 (ratio 0.87;
    the second-order flows 0.338 vs 0.430, 0.79; with the warm start K = 14 0.87 and 0.79), so
    the assertion below stays at the old 0.9 until the flow meets 0.5.
    The rod's curvature is its estimate of the discrete run's sharpness: during EoS it must match
    the discrete run's own mean sharpness to the 5% of the threshold that Rod Flow meets for GD
    (test_compare, test_sweep). The discrete run itself hovers 10% below the threshold here
    (measured 4.48), so the stated "within 5% of the threshold" fails for the rod (4.51) as it
    does for heavy ball itself: that assertion stays at the old +-0.75 (15%)."""
    p = rodflow.problems.get("eos-toy")
    flows = {"stable": StableFlow(), "rod": RodFlow(), "rod-smooth": RodFlow(smooth_nu=True)}
    r = rodflow.compare(p, lr=0.6, steps=600, optimizer=HeavyBall(beta=0.5), flows=flows, figure=False)
    m = r.metrics
    assert m["optimizer"] == "heavy-ball" and m["threshold"] == pytest.approx(5.0)
    assert m["optimizer_options"] == {"beta": 0.5}
    assert m["eos_onset_step"] is not None
    # stated target 0.5 (fails, measured 0.87): kept at 0.9, see the docstring
    assert m["flows"]["rod"]["rel_dist_mean_eos"] < 0.9 * m["flows"]["stable"]["rel_dist_mean_eos"]
    gd_sharpness = m["flows"]["discrete"]["sharpness_mean_eos"]
    assert abs(m["flows"]["rod"]["sharpness_mean_eos"] - gd_sharpness) < 0.05 * m["threshold"]
    # stated target: within 5% of the threshold (fails, measured 4.51): kept at 15%
    assert abs(m["flows"]["rod"]["sharpness_mean_eos"] - 5.0) < 0.75
    # no second moment: the smooth-nu option changes nothing
    assert m["flows"]["rod-smooth"]["rel_dist_mean_eos"] == pytest.approx(
        m["flows"]["rod"]["rel_dist_mean_eos"], rel=1e-9
    )


def test_adam_compare_runs_with_both_rod_variants():
    """Adam (optax defaults) on a small network, far below its threshold, with the rod on all of
    `z` and both smooth-`nu` variants. Checked against what holds whatever the numbers:

    - the discrete run is `optax.adam` itself (iterates and losses, run here by hand);
    - every flow starts on GD's first centre `m_0`; the rod's predicted loss there is the mean of
      GD's first two losses (its ends are `x_0` and `x_1`), the stable flow's is `L(m_0)`;
    - below the threshold the rod cannot grow (`d log rho/dt = 2 (kappa/threshold - 1) < 0`): its
      length never increases, and it shrinks (by about 10x a step here) until it reaches the noise
      floor `eps |c|` (`c` the rod's centre in `z`, whose norm is at most the largest `|z_k|`
      within the tracking error), where it is held;
    - the rod models GD's first steps' oscillation, which the stable flow averages away, so every
      rod tracks the discrete run better than the stable flow; once the rod is on the floor its
      ends coincide, the three rod variants follow the same equation, and they track alike
      (README: within 10%)."""
    p, lr, N = _problem(), 3e-3, 60
    flows = {
        "stable": StableFlow(),
        "rod": RodFlow(),
        "rod-smooth": RodFlow(smooth_nu=True),
        "rod-centre": RodFlow(smooth_nu=True, nu_at="centre"),
    }
    r = rodflow.compare(p, lr=lr, steps=N, optimizer=Adam(), flows=flows, figure=False)
    m = r.metrics
    thr = 3.8 / lr / 0.1  # (1 + beta1)/(1 - beta1) * 2/lr
    assert m["sharpness_kind"] == "preconditioned" and m["threshold"] == pytest.approx(thr)

    # the discrete run is optax.adam
    opt = optax.adam(lr)
    step = jax.jit(lambda x, st: opt.update(jax.grad(p.loss_flat)(x), st, x))
    x, st = p.x0, opt.init(p.x0)
    xs, z_norms = [x], []
    for _ in range(N + 1):
        upd, st = step(x, st)
        x = optax.apply_updates(x, upd)
        xs.append(x)
        z_norms.append(float(jnp.linalg.norm(Adam().pack(p, x, st))))
    losses = np.array([float(p.loss_flat(x)) for x in xs])
    np.testing.assert_allclose(r.series["discrete"]["loss"], losses[: N + 1], rtol=1e-12)
    np.testing.assert_allclose(p.ravel(r.final["discrete"]), xs[N], rtol=0, atol=1e-12)
    # far below the threshold: no EoS
    assert np.nanmax(r.series["discrete"]["sharpness"]) < 0.2 * thr and m["eos_onset_step"] is None

    L_m0 = float(p.loss_flat(0.5 * (xs[0] + xs[1])))
    eps = np.finfo(np.float64).eps
    for name in flows:
        s, f = r.series[name], m["flows"][name]
        assert f["diverged_at"] is None, name
        assert p.ravel(r.final[name]).shape == (p.dim,)  # the network's own pytree
        assert s["dist"][0] < 1e-12, (name, s["dist"][0])
        assert s["loss"][0] == pytest.approx(0.5 * (losses[0] + losses[1]) if name != "stable" else L_m0,
                                             rel=1e-12), name
        if name == "stable":
            continue
        rho = s["rho"]
        assert np.all(np.diff(rho) <= 0), name
        # on the floor (entered within one Euler step of it): held, the last half of the run
        assert rho[-1] <= eps * max(z_norms) and np.all(rho[N // 2 :] == rho[-1]), (name, rho[-1])
        assert f["rel_dist_mean"] < m["flows"]["stable"]["rel_dist_mean"], name
        assert f["rel_dist_mean"] == pytest.approx(m["flows"]["rod"]["rel_dist_mean"], rel=0.1), name

    args = FlowArgs(p, jnp.asarray(lr), Adam())
    y = RodFlow(smooth_nu=True).init(p.x0, args)
    assert y.centre.shape == (2 * p.dim,) and y.nu.shape == (p.dim,)
    # the centre is the whole joint state again, nu last
    z = RodFlow(smooth_nu=True).centre(y)
    np.testing.assert_array_equal(Adam().split(p, z).nu, y.nu)


def test_make_map_and_cli(tmp_path):
    assert make_map("adam", beta1=0.8, bias_correction=None) == Adam(beta1=0.8)
    assert make_map("adamw", weight_decay=0.01) == AdamW(weight_decay=0.01)
    with pytest.raises(ValueError, match="no option beta"):
        make_map("adam", beta=0.3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_map("sgdx")
    out = tmp_path / "run"
    rc = main(
        [
            "compare",
            "--problem",
            "eos-toy",
            "--lr",
            "0.6",
            "--steps",
            "50",
            "--x64",
            "--out",
            str(out),
            "--optimizer",
            "heavy-ball",
            "--beta",
            "0.5",
            "--no-figure",
            "--no-progress",
            "--flows",
            "discrete,stable,rod",
            "--rod-smooth-nu",
        ]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["optimizer"] == "heavy-ball" and m["threshold"] == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------------
# the published interface: typed state, capabilities, final classes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ALL_MAPS))
def test_typed_state_splits_and_joins(name):
    """`split` names the parts of z (params, momentum, nu, in that order) and `join` inverts it;
    the sizes are those of the optax state (nu: one entry for the scalar variants)."""
    p, m = _problem(), ALL_MAPS[name]
    z = _states(p, m, LRS.get(name, 1e-3), 2)[-1]
    st = m.split(p, z)
    assert isinstance(st, MapState)
    np.testing.assert_array_equal(m.join(st), z)
    np.testing.assert_array_equal(st.params, m.params(p, z))
    has_nu = isinstance(m, AbstractPreconditionedMap)
    n_nu = (1 if "scalar" in name else p.dim) if has_nu else 0
    assert st.nu.shape == (n_nu,)
    first = name.startswith(("heavy", "nesterov", "optax", "adam", "nadam", "scalar-adam"))
    assert st.momentum.shape == ((p.dim,) if first else (0,))
    rod, nu = m.smooth_split(p, z)
    np.testing.assert_array_equal(rod, z[: z.shape[0] - n_nu])
    np.testing.assert_array_equal(nu, st.nu)
    assert m.sharpness_kind == ("preconditioned" if has_nu else "hessian")


CAPABILITIES = {
    # map: (plain gradient, second-order form, preconditioner)
    GradientDescent(): (True, True, False),
    HeavyBall(): (False, True, False),
    Nesterov(): (False, False, False),
    RMSProp(): (False, True, True),
    ScalarRMSProp(): (False, True, True),
    Adam(): (False, True, True),
    ScalarAdam(): (False, True, True),
    AdamW(): (False, True, True),
    NAdam(): (False, False, True),
    OptaxMap(factory=optax.sgd): (False, False, False),
}


@pytest.mark.parametrize("m", list(CAPABILITIES), ids=lambda m: m.name)
def test_capabilities_and_flow_support(m):
    plain, second, precond = CAPABILITIES[m]
    assert isinstance(m, AbstractPlainGradientMap) == plain
    assert isinstance(m, AbstractMomentumMap) == second
    assert isinstance(m, AbstractPreconditionedMap) == precond
    for flow in (StableFlow(), RodFlow()):
        assert flow.unsupported(m) is None
    # Central Flow: GD, and the preconditioned maps without momentum or weight decay (RMSProp)
    rmsprop_like = precond and second and m.momentum() == 0 and m.decoupled_decay() is None
    assert (CentralFlow().unsupported(m) is None) == (plain or rmsprop_like)
    for flow in (MomentumStableFlow(), MomentumRodFlow()):
        msg = flow.unsupported(m)
        assert (msg is None) == second
        if msg is not None:
            assert msg.startswith("needs a map with a second-order (heavy-ball) form") and m.name in msg


def test_concrete_maps_are_final():
    """Shared code lives in abstract parents; subclassing a concrete map is a TypeError."""
    for cls in (GradientDescent, HeavyBall, Adam, RMSProp, AdamW, OptaxMap):
        with pytest.raises(TypeError, match="concrete"):
            type("Sub", (cls,), {"__module__": __name__})
    # no concrete map class derives from another concrete one
    concrete = [GradientDescent, HeavyBall, Nesterov, RMSProp, ScalarRMSProp, Adam, ScalarAdam, NAdam,
                AdamW, OptaxMap]
    for a in concrete:
        for b in concrete:
            assert a is b or not issubclass(a, b), (a, b)
    assert all(issubclass(c, AbstractMap) for c in concrete)


def test_named_maps_have_no_factory():
    """`HeavyBall(factory=optax.adam)` used to run SGD silently; now it is refused."""
    with pytest.raises(TypeError):
        HeavyBall(factory=optax.adam)
    with pytest.raises(TypeError):
        Adam(factory=optax.sgd)
    assert OptaxMap(factory=optax.adam).optimizer(0.1) is not None


def test_momentum_and_transient_steps():
    assert [m.momentum() for m in (GradientDescent(), HeavyBall(beta=0.5), Nesterov(beta=0.3), RMSProp(),
                                    Adam(beta1=0.8), AdamW(beta1=0.7), OptaxMap(factory=optax.sgd))] == [
        0.0, 0.5, 0.3, 0.0, 0.8, 0.7, 0.0]
    assert transient_steps(HeavyBall(beta=0.9)) == 88 and transient_steps(Adam(beta1=0.5)) == 14
    assert transient_steps(GradientDescent()) == transient_steps(RMSProp()) == 0
