"""compare(): end to end on toys, user losses, bad input, divergence, resume."""

import json

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import rodflow
from rodflow import _io


@pytest.fixture(scope="module")
def quartic_run():
    return rodflow.compare(rodflow.problems.get("quartic"), lr=0.2, steps=2000, sharpness_every=1,
                           figure=False)


def _quartic_grad(p):
    x, y = p
    u = x**2 * y**2 - 1.0
    return np.array([u * x * y**2, u * x**2 * y])


def test_quartic_matches_design_note(quartic_run):
    """L = (x^2 y^2 - 1)^2 / 4 at lr 0.2 from (3, 0.1).

    Gradient flow conserves `x^2 - y^2`: `d/dt (x^2 - y^2) = -2 lr u (x * x y^2 - y * x^2 y) = 0`
    (`u = x^2 y^2 - 1`). It starts at GD's first centre `m_0 = x_0 - lr g(x_0)/2` and converges
    to the minimum `x y = 1` on its branch (the flow contracts at lr * 2(x^2 + y^2) ~ 3.7 per step
    there, so 2000 steps are far past convergence): `x^2 = (C + sqrt(C^2 + 4))/2` with
    `C = x^2 - y^2` of `m_0`. At a minimum the Hessian is `grad(u) grad(u)^T / 2`, of top
    eigenvalue `|grad u|^2 / 2 = 2 (x^2 + y^2)` (at `xy = 1`). Both hold to the integrator's
    tolerance (rtol 1e-6).

    GD and Rod Flow: GD ends at a minimum too (loss ~0), whose sharpness `2 (x^2 + y^2)` is at
    most `2/lr = 10` (GD cannot stay at a sharper minimum); the design note's measured end points:
    GD self-stabilises at (2.180, -0.459), sharpness 9.93; Rod Flow ends at the mirror image
    (2.180, +0.459) with the same sharpness."""
    r = quartic_run
    lr = 0.2
    gd, rod, gf = (np.asarray(r.final[k]) for k in ("discrete", "rod", "stable"))
    x0 = np.array([3.0, 0.1])
    m0 = x0 - 0.5 * lr * _quartic_grad(x0)
    C = m0[0] ** 2 - m0[1] ** 2
    assert gf[0] ** 2 - gf[1] ** 2 == pytest.approx(C, rel=1e-5)
    x_end = np.sqrt((C + np.sqrt(C**2 + 4.0)) / 2.0)
    np.testing.assert_allclose(gf, [x_end, 1.0 / x_end], rtol=1e-5)
    s = {k: r.series[k]["sharpness"][-1] for k in r.series}
    assert s["stable"] == pytest.approx(2.0 * (x_end**2 + x_end**-2), rel=1e-5)
    assert s["stable"] > 2.0 / lr  # gradient flow ends at a minimum GD cannot hold

    # GD: a minimum (x y = +-1) no sharper than 2/lr; its sharpness there is 2 (x^2 + y^2)
    assert abs(abs(gd[0] * gd[1]) - 1.0) < 1e-3
    assert s["discrete"] == pytest.approx(2.0 * (gd[0] ** 2 + gd[1] ** 2), rel=1e-3)
    assert s["discrete"] <= 2.0 / lr
    np.testing.assert_allclose(np.abs(gd), [2.180, 0.459], atol=2e-3)
    np.testing.assert_allclose(np.abs(rod), np.abs(gd), atol=1e-4)
    assert abs(s["discrete"] - 9.93) < 0.01 and abs(s["rod"] - s["discrete"]) < 1e-3
    assert r.metrics["eos_onset_step"] is not None


def test_eos_toy_rod_tracks_gd_better_than_gradient_flow():
    r = rodflow.compare(rodflow.problems.get("eos-toy"), lr=0.4, steps=800, figure=False)
    m = r.metrics["flows"]
    assert r.metrics["eos_onset_step"] is not None
    assert m["rod"]["rel_dist_mean_eos"] < 0.5 * m["stable"]["rel_dist_mean_eos"]
    # during EoS the rod's curvature hovers at 2/lr; gradient flow's sharpness does not
    assert abs(m["rod"]["sharpness_mean_eos"] - 5.0) < 0.25
    assert m["stable"]["sharpness_mean_eos"] > 5.5
    # the series have one entry per step 0..N and distances start at 0
    assert len(r.series["rod"]["rel_dist"]) == 801
    assert r.series["rod"]["dist"][0] == pytest.approx(0.0, abs=1e-12)


def test_metrics_schema_and_files(tmp_path):
    r = rodflow.compare(rodflow.problems.get("eos-toy"), lr=0.4, steps=200, out=tmp_path)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    for key in ("problem", "lr", "steps", "dtype", "eos_onset_step", "eos_onset_rule",
                "sharpness_initial", "loss_smooth_window", "flows"):
        assert key in data
    assert set(data["flows"]) == {"discrete", "stable", "rod"}
    for key in ("final_loss", "wall_s", "sharpness_final"):
        assert key in data["flows"]["discrete"]
    for name in ("stable", "rod"):
        for key in ("rel_dist_mean_eos", "rel_dist_max_eos", "rel_dist_mean", "loss_err_eos",
                    "loss_err_smooth_eos", "catapult_lag_steps", "catapult_corr", "loss_err",
                    "sharpness_mean_eos", "final_loss", "wall_s", "grad_evals"):
            assert key in data["flows"][name], (name, key)
    # Euler dt 0.5, two gradients per right-hand side, over whole blocks covering steps 0..200
    every = r.metrics["sharpness_every"]
    assert data["flows"]["rod"]["grad_evals"] == 2 * 2 * every * -(-201 // every)
    series = _io.read_series(tmp_path / "series.npz")
    np.testing.assert_array_equal(series["rod"]["rel_dist"], r.series["rod"]["rel_dist"])


def test_no_eos_gives_nulls():
    """The quadratic `L = sum lam_i x_i^2 / 2` (lam = 1, 10, 30) at lr 0.01, far below the
    threshold, in closed form: GD `x_k = (1 - lr lam)^k x_0`, centres `m_k = (x_k + x_{k+1})/2`;
    gradient flow from `m_0` is `exp(-lr lam t) m_0`. The rod's centre moves with the mean of the
    steps at its ends, which on a quadratic is the step at the centre whatever the rod: the linear
    ODE `c' = -lr lam c`, here integrated by Euler with dt 0.5, `c_k = (1 - lr lam/2)^(2k) m_0`."""
    lr, N = 0.01, 50
    flows = {"stable": rodflow.StableFlow(), "rod": rodflow.RodFlow(solver=diffrax.Euler(), dt=0.5)}
    r = rodflow.compare(rodflow.problems.get("quadratic"), lr=lr, steps=N, flows=flows, figure=False)
    assert r.metrics["eos_onset_step"] is None
    assert r.metrics["flows"]["rod"]["rel_dist_mean_eos"] is None
    assert r.metrics["flows"]["rod"]["loss_err_eos"] is None
    lam, k = np.array([1.0, 10.0, 30.0]), np.arange(N + 2)[:, None]
    x = (1 - lr * lam) ** k
    m = 0.5 * (x[:-1] + x[1:])
    disp = np.linalg.norm(m - m[0], axis=1)
    np.testing.assert_allclose(r.series["discrete"]["loss"], 0.5 * (lam * x[: N + 1] ** 2).sum(1), rtol=1e-12)
    np.testing.assert_allclose(r.series["discrete"]["disp"], disp, rtol=1e-12, atol=1e-15)
    centres = {"stable": np.exp(-lr * lam * k[: N + 1]) * m[0],
               "rod": (1 - 0.5 * lr * lam) ** (2 * k[: N + 1]) * m[0]}
    # the stable flow to its integrator's tolerance (Tsit5, rtol 1e-6), the rod's Euler to rounding
    for name, tol in (("stable", 1e-6), ("rod", 1e-12)):
        dist = np.linalg.norm(centres[name] - m, axis=1)
        np.testing.assert_allclose(r.series[name]["dist"], dist, rtol=0, atol=tol, err_msg=name)
        rel_mean = np.mean(dist[1:] / disp[1:])
        assert r.metrics["flows"][name]["rel_dist_mean"] == pytest.approx(rel_mean, rel=1e-4), name
    # predicted losses at the start: L(m_0) for gradient flow, the mean over GD's pair for the rod
    d = r.series["discrete"]
    np.testing.assert_allclose(r.series["stable"]["loss"][0], 0.5 * (lam * m[0] ** 2).sum(), rtol=1e-12)
    np.testing.assert_allclose(r.series["rod"]["loss"][0], 0.5 * (d["loss"][0] + d["loss"][1]), rtol=1e-12)


def test_user_pytree_loss_and_equinox_model():
    """A loss of any pytree: the discrete run is GD on the pytree itself (here run by hand with
    `jax.grad` and `tree_map`, no flattening), and the results come back as the same pytree."""
    key = jr.PRNGKey(0)
    x = jr.normal(key, (30, 3))
    y = jnp.sin(x[:, :1])

    model = eqx.nn.MLP(3, 1, 8, 1, key=jr.PRNGKey(1))

    def loss(m):
        return 0.5 * jnp.mean((jax.vmap(m)(x) - y) ** 2)

    lr, N = 0.5, 40
    r = rodflow.compare(loss, model, lr=lr, steps=N, figure=False)
    final = r.final["rod"]
    assert isinstance(final, eqx.nn.MLP)
    assert final.layers[0].weight.shape == model.layers[0].weight.shape
    params, static = eqx.partition(model, eqx.is_inexact_array)
    value_and_grad = jax.jit(jax.value_and_grad(lambda p: loss(eqx.combine(p, static))))
    losses = []
    for _ in range(N + 1):
        value, g = value_and_grad(params)
        losses.append(float(value))
        params = jax.tree.map(lambda a, b: a - lr * b, params, g)
    np.testing.assert_allclose(r.series["discrete"]["loss"], losses, rtol=1e-12)
    # x_N (the loop above went one step further: undo it from x_{N+1} = x_N - lr g(x_N))
    x_N = jax.tree.map(lambda a, b: a + lr * b, params, g)
    got = eqx.filter(r.final["discrete"], eqx.is_inexact_array)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(x_N), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)

    # w -> 2, b -> 0 on L = |w - 2|^2 + b^2: GD contracts w - 2 by 1 - 2 lr = 0.8 a step
    params = {"w": jnp.ones(3), "b": jnp.zeros(())}
    r2 = rodflow.compare(lambda p: jnp.sum((p["w"] - 2.0) ** 2) + p["b"] ** 2, params, lr=0.1,
                         steps=30, flows=("discrete", "rod"), figure=False)
    assert set(r2.final["discrete"]) == {"w", "b"}
    np.testing.assert_allclose(r2.final["discrete"]["w"], 2.0 - 0.8**30, rtol=1e-13)
    assert float(r2.final["discrete"]["b"]) == 0.0
    # the rod's centre follows gradient flow's linear ODE c' = -0.2 (c - 2) from m_0 = 1.1
    # (a quadratic: the mean step at the ends is the step at the centre), by Euler with dt 0.5
    np.testing.assert_allclose(r2.final["rod"]["w"], 2.0 - 0.9 * 0.9 ** (2 * 30), rtol=1e-13)
    # below the threshold (lr * 2 < 2) the rod shrinks to the noise floor (rho ~ 1e-16): its
    # predicted loss is the loss at its centre, 3 (c - 2)^2
    assert r2.metrics["flows"]["rod"]["final_loss"] == pytest.approx(3 * (0.9 * 0.9**60) ** 2, rel=1e-9)


def test_chunked_run_equals_single_chunk():
    p = rodflow.problems.get("mlp-digits", n=40, width=8)
    a = rodflow.compare(p, lr=0.5, steps=60, chunk=1000, figure=False)
    b = rodflow.compare(p, lr=0.5, steps=60, chunk=20, figure=False)
    for run in ("discrete", "stable", "rod"):
        for key in ("loss", "sharpness"):
            np.testing.assert_allclose(a.series[run][key], b.series[run][key], rtol=1e-10)
    np.testing.assert_allclose(a.series["rod"]["rel_dist"][1:], b.series["rod"]["rel_dist"][1:],
                               rtol=1e-8)
    # a memory budget of 25 steps of GD centres (counted twice) cuts the chunk to 20
    itemsize = np.dtype(p.x0.dtype).itemsize
    c = rodflow.compare(p, lr=0.5, steps=60, chunk=1000, memory_mb=25 * 2 * itemsize * p.dim / 2**20,
                        figure=False)
    assert (a.metrics["chunk"], b.metrics["chunk"], c.metrics["chunk"]) == (70, 20, 20)
    for run in ("discrete", "stable", "rod"):
        np.testing.assert_array_equal(b.series[run]["loss"], c.series[run]["loss"])


def test_memory_budget_cuts_the_chunk_to_whole_blocks():
    s = rodflow.Settings(steps=100, chunk=500, memory_mb=1.0)  # 1 MiB
    assert s.fitted(grid=1, dim=1000, itemsize=8).chunk == 60  # 16,000 bytes a step: 65 fit
    assert s.fitted(grid=4, dim=10000, itemsize=4).chunk == 10  # not one block fits: one block
    assert s.fitted(grid=1, dim=10, itemsize=8) is s  # everything fits: unchanged
    with pytest.raises(ValueError, match="`memory_mb` must be a positive number"):
        rodflow.Settings(steps=100, memory_mb=0.0)


def test_resume_after_interruption_gives_same_numbers(tmp_path, stop_at_checkpoint):
    p = rodflow.problems.get("mlp-digits", n=40, width=8)
    kw = dict(lr=0.5, steps=60, chunk=20, figure=False)
    full = rodflow.compare(p, **kw)

    stop_at_checkpoint(lambda: rodflow.compare(p, out=tmp_path, **kw), after=2)
    resumed = rodflow.compare(p, out=tmp_path, resume=True, **kw)
    for run in full.series:
        for key in full.series[run]:
            np.testing.assert_allclose(resumed.series[run][key], full.series[run][key], rtol=1e-12,
                                       err_msg=f"{run}/{key}")
    # a checkpoint written with other settings is refused
    with pytest.raises(ValueError, match="different settings"):
        rodflow.compare(p, out=tmp_path, resume=True, **{**kw, "lr": 0.4})


def test_divergence_is_reported_with_its_step(tmp_path):
    p = rodflow.problems.get("quadratic", eigenvalues="1,10,30")
    r = rodflow.compare(p, lr=0.2, steps=400, out=tmp_path)  # lr * 30 = 6 > 2: GD blows up
    d = r.metrics["flows"]["discrete"]["diverged_at"]
    assert d is not None and 0 < d < 400
    assert not np.isfinite(r.series["discrete"]["loss"][d])
    assert np.all(np.isfinite(r.series["discrete"]["loss"][:d]))
    assert json.loads((tmp_path / "metrics.json").read_text())["flows"]["discrete"]["diverged_at"] == d
    assert (tmp_path / "compare.png").exists()
    assert "non-finite" in r.table()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-0.1, steps=10), "`lr` must be a positive number"),
        (dict(lr=0.0, steps=10), "`lr` must be a positive number"),
        (dict(lr=0.1, steps=0), "`steps` must be a positive integer"),
        (dict(lr=0.1, steps=10, flows=("discrete", "wobble")), "unknown flow 'wobble'"),
        (dict(lr=0.1, steps=10, save_every=7), "multiple of `sharpness_every`"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rodflow.compare(rodflow.problems.get("quadratic"), **kwargs)


def test_fractional_steps_rejected():
    # a ValueError from rodflow, or a TypeError from the jaxtyping/beartype checker under pytest
    with pytest.raises((ValueError, TypeError), match="steps"):
        rodflow.compare(rodflow.problems.get("quadratic"), lr=0.1, steps=2.5)


def test_bad_losses_and_params():
    with pytest.raises(ValueError, match="must return a scalar"):
        rodflow.compare(lambda x: x**2, jnp.ones(3), lr=0.1, steps=5)
    with pytest.raises(ValueError, match="failed on the given `params`"):
        rodflow.compare(lambda p: jnp.sum(p["w"] @ jnp.ones(4)), {"w": jnp.ones(3)}, lr=0.1, steps=5)
    with pytest.raises(ValueError, match="no floating-point arrays"):
        rodflow.compare(lambda p: jnp.sum(p), jnp.arange(3), lr=0.1, steps=5)
    with pytest.raises(ValueError, match="callable"):
        rodflow.compare(3.0, jnp.ones(3), lr=0.1, steps=5)
    p = rodflow.problems.get("quadratic")
    with pytest.raises(ValueError, match="does not match|leaf of shape"):
        rodflow.compare(p, jnp.ones(5), lr=0.1, steps=5)
    with pytest.raises(ValueError, match="unknown problem"):
        rodflow.problems.get("quadratc")
    with pytest.raises(ValueError, match="has no option"):
        rodflow.problems.get("quadratic", widht=3)
