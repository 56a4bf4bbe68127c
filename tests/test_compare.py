"""compare(): end to end on toys, user losses, bad input, divergence, resume."""

import json

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


def test_quartic_matches_design_note(quartic_run):
    """GD self-stabilises at (2.180, -0.459), sharpness 9.93; Rod Flow ends at the mirror image
    (2.180, +0.459) with the same sharpness; gradient flow at (3.02, 0.33), sharpness 18.4."""
    r = quartic_run
    gd, rod, gf = (np.asarray(r.final[k]) for k in ("discrete", "rod", "stable"))
    np.testing.assert_allclose(np.abs(gd), [2.180, 0.459], atol=2e-3)
    np.testing.assert_allclose(np.abs(rod), np.abs(gd), atol=1e-4)
    np.testing.assert_allclose(gf, [3.02, 0.33], atol=1e-2)
    s = {k: r.series[k]["sharpness"][-1] for k in r.series}
    assert abs(s["discrete"] - 9.93) < 0.01 and abs(s["rod"] - s["discrete"]) < 1e-3
    assert abs(s["stable"] - 18.4) < 0.1
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
    r = rodflow.compare(rodflow.problems.get("quadratic"), lr=0.01, steps=50, figure=False)
    assert r.metrics["eos_onset_step"] is None
    assert r.metrics["flows"]["rod"]["rel_dist_mean_eos"] is None
    assert r.metrics["flows"]["rod"]["rel_dist_mean"] is not None
    # far below the threshold rod flow and gradient flow both follow GD closely
    assert r.metrics["flows"]["rod"]["rel_dist_mean"] < 0.05


def test_user_pytree_loss_and_equinox_model():
    key = jr.PRNGKey(0)
    x = jr.normal(key, (30, 3))
    y = jnp.sin(x[:, :1])

    model = eqx.nn.MLP(3, 1, 8, 1, key=jr.PRNGKey(1))

    def loss(m):
        return 0.5 * jnp.mean((jax.vmap(m)(x) - y) ** 2)

    r = rodflow.compare(loss, model, lr=0.5, steps=40, figure=False)
    final = r.final["rod"]
    assert isinstance(final, eqx.nn.MLP)
    assert final.layers[0].weight.shape == model.layers[0].weight.shape

    params = {"w": jnp.ones(3), "b": jnp.zeros(())}
    r2 = rodflow.compare(lambda p: jnp.sum((p["w"] - 2.0) ** 2) + p["b"] ** 2, params, lr=0.1,
                         steps=30, flows=("discrete", "rod"), figure=False)
    assert set(r2.final["discrete"]) == {"w", "b"}
    assert np.isfinite(r2.metrics["flows"]["rod"]["final_loss"])


def test_chunked_run_equals_single_chunk():
    p = rodflow.problems.get("mlp-digits", n=40, width=8)
    a = rodflow.compare(p, lr=0.5, steps=60, chunk=1000, figure=False)
    b = rodflow.compare(p, lr=0.5, steps=60, chunk=20, figure=False)
    for run in ("discrete", "stable", "rod"):
        for key in ("loss", "sharpness"):
            np.testing.assert_allclose(a.series[run][key], b.series[run][key], rtol=1e-10)
    np.testing.assert_allclose(a.series["rod"]["rel_dist"][1:], b.series["rod"]["rel_dist"][1:],
                               rtol=1e-8)


def test_resume_after_interruption_gives_same_numbers(tmp_path, monkeypatch):
    p = rodflow.problems.get("mlp-digits", n=40, width=8)
    kw = dict(lr=0.5, steps=60, chunk=20, figure=False)
    full = rodflow.compare(p, **kw)

    calls = {"n": 0}
    real_save = _io.save_checkpoint

    def interrupting_save(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(_io, "save_checkpoint", interrupting_save)
    with pytest.raises(KeyboardInterrupt):
        rodflow.compare(p, out=tmp_path, **kw)
    monkeypatch.setattr(_io, "save_checkpoint", real_save)
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
