"""Warm start (`start_step`): the flows start from the discrete run's state at step K."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import rodflow
from rodflow import HeavyBall, MomentumRodFlow, MomentumStableFlow, RodFlow, StableFlow
from rodflow.cli import main


def _problem():
    """A small non-quadratic problem (a quartic valley) on which heavy ball moves for a while."""
    lams = jnp.asarray([0.3, 1.0, 4.0])

    def loss(x):
        return 0.5 * jnp.sum(lams * x**2) + 0.05 * jnp.sum(x**4)

    return rodflow.Problem(loss, jnp.asarray([1.0, -0.8, 0.5]), name="quartic-valley")


FLOWS = {"stable": StableFlow(), "rod": RodFlow(), "stable-momentum": MomentumStableFlow(),
         "rod-momentum": MomentumRodFlow()}


def test_transient_steps():
    assert rodflow.transient_steps(HeavyBall(beta=0.9)) == 88
    assert rodflow.transient_steps(HeavyBall(beta=0.5)) == 14
    assert rodflow.transient_steps(rodflow.Adam()) == 88  # beta1 = 0.9
    assert rodflow.transient_steps(rodflow.GradientDescent()) == 0
    assert rodflow.transient_steps(rodflow.RMSProp()) == 0
    # the ringing has decayed to tol: sqrt(beta)^K <= tol < sqrt(beta)^(K-1)
    K = rodflow.transient_steps(HeavyBall(beta=0.9), tol=1e-3)
    assert 0.9 ** (K / 2) <= 1e-3 < 0.9 ** ((K - 1) / 2)
    with pytest.raises(ValueError, match="`tol`"):
        rodflow.transient_steps(HeavyBall(), tol=2.0)


def test_flows_start_on_the_discrete_run_at_start_step():
    """Every flow is undefined (nan) before K, starts exactly on the discrete centre m_K, and is
    measured from K on; the discrete run itself is unchanged."""
    p, K, N = _problem(), 30, 80
    kw = dict(lr=0.2, steps=N, optimizer=HeavyBall(beta=0.9), sharpness_every=10, figure=False)
    warm = rodflow.compare(p, flows=FLOWS, start_step=K, **kw)
    cold = rodflow.compare(p, flows=("stable",), **kw)
    np.testing.assert_array_equal(warm.series["discrete"]["loss"], cold.series["discrete"]["loss"])
    assert warm.metrics["start_step"] == K and cold.metrics["start_step"] == 0
    for name in FLOWS:
        s, m = warm.series[name], warm.metrics["flows"][name]
        assert np.isnan(s["rel_dist"][:K]).all() and np.isnan(s["loss"][:K]).all(), name
        assert s["rel_dist"][K] < 1e-9, (name, s["rel_dist"][K])  # starts on m_K
        assert np.isfinite(s["rel_dist"][K:]).all(), name
        assert np.isnan(s["sharpness"][s["sharpness_step"] < K]).all(), name
        assert np.isfinite(s["sharpness"][s["sharpness_step"] >= K]).all(), name
        assert m["rel_dist_mean"] == pytest.approx(float(np.mean(s["rel_dist"][K:])), rel=1e-12)
        assert m["diverged_at"] is None


def test_warm_start_removes_heavy_balls_opening_transient():
    """Started at rest, heavy ball (beta 0.9) rings for ~88 steps and no flow models it: on a
    small network the second-order flow started at step 0 is 0.19 off by steps 200-300. Started
    after the transient, it follows the discrete run to within 1e-4."""
    p, N = rodflow.problems.get("mlp-digits", n=30, width=4), 300
    K = rodflow.transient_steps(HeavyBall(beta=0.9))
    kw = dict(lr=0.1, steps=N, optimizer=HeavyBall(beta=0.9), flows={"s": MomentumStableFlow()},
              sharpness_every=50, figure=False)
    cold = rodflow.compare(p, **kw).series["s"]["rel_dist"]
    warm = rodflow.compare(p, start_step=K, **kw).series["s"]["rel_dist"]
    late = slice(200, N + 1)
    assert np.mean(cold[late]) > 0.05
    assert np.mean(warm[late]) < 1e-3 * np.mean(cold[late]), (np.mean(warm[late]), np.mean(cold[late]))


def test_sweep_with_start_step_matches_compare():
    p, K = _problem(), 12
    kw = dict(steps=40, optimizer=HeavyBall(beta=0.5), flows=("stable-momentum",), sharpness_every=10,
              figure=False, start_step=K)
    res = rodflow.sweep(p, lrs=[0.2, 0.3], **kw)
    for i, lr in enumerate([0.2, 0.3]):
        one = rodflow.compare(p, lr=lr, **kw).series["stable-momentum"]["rel_dist"]
        got = res.runs[i].series["stable-momentum"]["rel_dist"]
        np.testing.assert_allclose(got[K:], one[K:], rtol=1e-9, atol=1e-12)
        assert np.isnan(got[:K]).all()


@pytest.mark.parametrize("bad", [-1, 40, 2.5, True, "5"])
def test_start_step_must_be_a_step_of_the_run(bad):
    # (a non-integer is refused by the signature's type check too, when tests run with it)
    with pytest.raises((ValueError, TypeError), match="start_step"):
        rodflow.compare(_problem(), lr=0.1, steps=40, start_step=bad, figure=False)


def test_cli_start_step_auto(tmp_path):
    out = tmp_path / "run"
    code = main(["compare", "--problem", "quadratic", "--lr", "0.1", "--steps", "100", "--optimizer",
                 "heavy-ball", "--beta", "0.5", "--start-step", "auto", "--flows", "discrete,stable,rod",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["start_step"] == 14 and m["flows"]["rod"]["rel_dist_mean"] is not None
    assert (out / "compare.png").stat().st_size > 10_000  # the figure copes with the nan prefix


def test_cli_start_step_bad_value_one_line(capsys):
    code = main(["compare", "--problem", "quadratic", "--lr", "0.1", "--steps", "10", "--start-step", "soon",
                 "--no-progress", "--no-figure"])
    assert code == 2
    assert "`--start-step` must be a step number or 'auto'" in capsys.readouterr().err



@pytest.mark.parametrize("x0,above", [("2.2,0.05", True), ("2.6,0.01", True), ("1.0,0.1", False)])
def test_auto_start_after_a_catapult_from_initialisation(x0, above):
    # eos-toy (sharpness exp(x)) started above the threshold 2/lr = 5: GD's y-oscillation grows by
    # |lr e^x - 1| per step, pushes x down and settles. `start_step="auto"` starts the flows at the
    # first measured step with GD's sharpness back at or below the threshold, the same step the
    # discrete run's own series shows; a run that starts below it starts at 0.
    p = rodflow.problems.get("eos-toy", x0=x0)
    base = rodflow.compare(p, lr=0.4, steps=200, sharpness_every=5, flows=("rod",), figure=False)
    S, steps = base.series["discrete"]["sharpness"], base.series["discrete"]["sharpness_step"]
    expected = int(next(k for k, s in zip(steps, S) if s <= 5.0))
    assert (S[0] > 5.0) == above and (expected > 0) == above
    r = rodflow.compare(p, lr=0.4, steps=200, sharpness_every=5, flows=("rod",), figure=False,
                        start_step="auto")
    assert r.metrics["start_step"] == expected
    assert r.metrics["start_step_auto"] == {"momentum_transient": 0, "opening_catapult_end": expected,
                                            "start_step": expected}
    rod_d = r.series["rod"]["rel_dist"]
    assert np.all(np.isnan(rod_d[:expected])) and np.all(np.isfinite(rod_d[expected + 1:]))
    note = "starts above the threshold" in base.table()
    assert note == above and f"Flows start at step {expected} (start_step auto" in r.table()


def test_auto_start_when_the_catapult_never_settles():
    # a quadratic with lr * lambda_max = 6 > 2 diverges: no settled step, the flows start at 0
    p = rodflow.problems.get("quadratic")
    r = rodflow.compare(p, lr=0.2, steps=50, sharpness_every=5, flows=("stable",), figure=False,
                        start_step="auto")
    assert r.metrics["start_step"] == 0 and r.metrics["start_step_auto"]["opening_catapult_end"] is None
    assert "does not settle" in r.table()


def test_sweep_auto_start_is_the_latest_catapult_end():
    # each grid point's catapult end is the one compare finds for it; the sweep starts after all
    p = rodflow.problems.get("eos-toy", x0="2.2,0.05")
    ends = [rodflow.compare(p, lr=lr, steps=100, sharpness_every=5, flows=("rod",), figure=False,
                            start_step="auto").metrics["start_step"] for lr in (0.3, 0.4)]
    r = rodflow.sweep(p, lrs=[0.3, 0.4], steps=100, sharpness_every=5, flows=("rod",), figure=False,
                      start_step="auto")
    assert r.metrics["start_step_auto"]["opening_catapult_end"] == ends
    assert r.metrics["start_step_auto"]["start_step"] == max(ends) > 0
