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


def test_gd_optimizer_reproduces_default():
    p = rodflow.problems.get("eos-toy")
    ref = rodflow.compare(p, lr=0.4, steps=400, figure=False)
    same = rodflow.compare(p, lr=0.4, steps=400, optimizer=GradientDescent(), figure=False)
    generic = rodflow.compare(p, lr=0.4, steps=400, optimizer=OptaxMap(factory=optax.sgd), figure=False)
    for name in ("discrete", "stable", "rod"):
        for key, v in ref.metrics["flows"][name].items():
            if key in ("wall_s", "compile_s"):
                continue
            assert same.metrics["flows"][name][key] == v, (name, key)
            if isinstance(v, float):
                assert generic.metrics["flows"][name][key] == pytest.approx(v, rel=1e-8, abs=1e-12)
    assert ref.metrics["eos_onset_step"] == generic.metrics["eos_onset_step"] is not None


def test_heavy_ball_eos_toy_rod_tracks_better():
    """Heavy ball (beta 0.5, threshold 3/lr = 5) at its edge of stability on the EoS toy.
    Measured: rod 0.373 vs stable 0.430 (mean EoS tracking error): better, but NOT the factor 2
    the issue asks for (see benchmarks/results/optimizers.json); the rod's curvature during EoS
    averages 4.51, 10% below the threshold 5 (for GD on this toy it is within 5%)."""
    p = rodflow.problems.get("eos-toy")
    flows = {"stable": StableFlow(), "rod": RodFlow(), "rod-smooth": RodFlow(smooth_nu=True)}
    r = rodflow.compare(p, lr=0.6, steps=600, optimizer=HeavyBall(beta=0.5), flows=flows, figure=False)
    m = r.metrics
    assert m["optimizer"] == "heavy-ball" and m["threshold"] == pytest.approx(5.0)
    assert m["optimizer_options"] == {"beta": 0.5}
    assert m["eos_onset_step"] is not None
    assert m["flows"]["rod"]["rel_dist_mean_eos"] < 0.9 * m["flows"]["stable"]["rel_dist_mean_eos"]
    assert abs(m["flows"]["rod"]["sharpness_mean_eos"] - 5.0) < 0.75
    # no second moment: the smooth-nu option changes nothing
    assert m["flows"]["rod-smooth"]["rel_dist_mean_eos"] == pytest.approx(
        m["flows"]["rod"]["rel_dist_mean_eos"], rel=1e-9
    )


def test_adam_compare_runs_with_both_rod_variants():
    p = _problem()
    flows = {
        "stable": StableFlow(),
        "rod": RodFlow(),
        "rod-smooth": RodFlow(smooth_nu=True),
        "rod-centre": RodFlow(smooth_nu=True, nu_at="centre"),
    }
    r = rodflow.compare(p, lr=3e-3, steps=60, optimizer=Adam(), flows=flows, figure=False)
    m = r.metrics
    assert m["sharpness_kind"] == "preconditioned" and m["threshold"] == pytest.approx(3.8 / 3e-3 / 0.1)
    for name in flows:
        assert m["flows"][name]["diverged_at"] is None, name
        assert np.isfinite(r.series[name]["rel_dist"][1:]).all()
        assert np.asarray(r.final[name]).shape == (p.dim,) or r.final[name] is not None
    args = FlowArgs(p, jnp.asarray(3e-3), Adam())
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
    assert (CentralFlow().unsupported(m) is None) == plain
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
