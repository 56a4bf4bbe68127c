"""Learning-rate schedules: a constant schedule is the constant step size, bit for bit; the
discrete run is `optax.sgd(schedule)`; the threshold moves with `lr(t)`; a sweep varies the
schedule's peak; files, figure and resume keep the schedule."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rodflow

TOY = dict(steps=200, sharpness_every=5, figure=False)


def _toy():
    return rodflow.problems.get("eos-toy")


def _same(a, b):
    """Every series (same keys of `a`) and every metric but timings, same bits."""
    for run in a.series:
        for key in a.series[run]:
            np.testing.assert_array_equal(b.series[run][key], a.series[run][key], err_msg=f"{run}/{key}")
    timing = ("wall_s", "compile_s")
    for run, m in a.metrics["flows"].items():
        assert {k: v for k, v in m.items() if k not in timing} == \
            {k: v for k, v in b.metrics["flows"][run].items() if k not in timing}, run
    for key, v in a.metrics.items():
        if key != "flows":
            assert b.metrics[key] == v, key


@pytest.mark.parametrize("optimizer,flows", [
    (None, ("discrete", "stable", "rod")),
    (rodflow.HeavyBall(beta=0.5), ("discrete", "rod", "stable-momentum")),
])
def test_constant_schedule_reproduces_constant_lr_exactly(optimizer, flows):
    kw = dict(TOY, flows=flows, optimizer=optimizer)
    const = rodflow.compare(_toy(), lr=0.3, **kw)
    for schedule in (lambda t: 0.3, optax.constant_schedule(0.3)):
        sched = rodflow.compare(_toy(), lr=schedule, **kw)
        _same(const, sched)
        assert sched.metrics["lr_schedule"] == "custom"
        np.testing.assert_array_equal(sched.series["discrete"]["lr"], 0.3)
    assert "lr_schedule" not in const.metrics and "threshold" not in const.series["discrete"]


def test_nearly_constant_schedule_runs_the_scheduled_path_close_to_constant():
    """A schedule that is not constant takes the scheduled code path (the step size is
    `lr * schedule(t)` inside the compiled program); 1e-10 away from constant, it agrees with
    the constant run to rounding."""
    kw = dict(TOY, flows=("discrete", "rod"), optimizer=rodflow.RMSProp())
    const = rodflow.compare(_toy(), lr=0.02, **kw)
    sched = rodflow.compare(_toy(), lr=lambda t: 0.02 * (1.0 + 1e-10 * jnp.asarray(t, jnp.float64) / 200),
                            **kw)
    assert np.ptp(sched.series["discrete"]["lr"]) > 0
    for run in const.series:
        for key in ("loss", "sharpness"):
            np.testing.assert_allclose(sched.series[run][key], const.series[run][key], rtol=1e-8,
                                       err_msg=f"{run}/{key}")


def _hand_loop(problem, opt, steps):
    """The discrete run written by hand with optax: losses L(x_k), k = 0..steps."""
    x, state = problem.x0, opt.init(problem.x0)
    update = jax.jit(opt.update)
    losses = []
    for _ in range(steps + 1):
        loss, g = jax.value_and_grad(problem.loss_flat)(x)
        losses.append(float(loss))
        updates, state = update(g, state, x)
        x = optax.apply_updates(x, updates)
    return np.asarray(losses)


def _warmup(lo, hi, n):
    """Linear warm-up from `lo` to `hi` over `n` steps, then constant, in float64 (optax's
    schedules compute in float32 on an int32 count, and XLA may round them differently in two
    programs: one float32 ulp of lr moves GD's losses by ~1e-7 after a few hundred steps)."""
    return lambda t: lo + (hi - lo) * jnp.minimum(jnp.asarray(t, jnp.float64), n) / n


@pytest.mark.parametrize("name", ["sgd", "rmsprop"])
def test_discrete_run_is_optax_with_the_schedule(name):
    p = _toy()
    if name == "sgd":
        schedule = _warmup(0.1, 0.4, 100)
        opt, opt_map = optax.sgd(schedule), None
    else:
        schedule = _warmup(0.005, 0.02, 100)
        opt, opt_map = optax.rmsprop(schedule, decay=0.99, eps=1e-8, eps_in_sqrt=False), rodflow.RMSProp()
    r = rodflow.compare(p, lr=schedule, flows=("discrete",), optimizer=opt_map, **TOY)
    hand = _hand_loop(p, opt, TOY["steps"])
    np.testing.assert_allclose(r.series["discrete"]["loss"], hand, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(r.series["discrete"]["lr"],
                               np.asarray([schedule(k) for k in range(TOY["steps"] + 1)]), rtol=1e-15)


def test_an_optax_schedule_is_evaluated_on_optax_count():
    """An optax schedule is called on an int32 count, as `optax.sgd(schedule)` calls it."""
    schedule = optax.linear_schedule(0.1, 0.4, 100)
    r = rodflow.compare(_toy(), lr=schedule, flows=("discrete",), **TOY)
    expect = np.asarray([schedule(jnp.int32(k)) for k in range(TOY["steps"] + 1)], np.float64)
    np.testing.assert_allclose(r.series["discrete"]["lr"], expect, rtol=5e-7)
    hand = _hand_loop(_toy(), optax.sgd(schedule), TOY["steps"])
    np.testing.assert_allclose(r.series["discrete"]["loss"], hand, rtol=1e-5)


def test_threshold_series_follows_lr_of_t():
    schedule = optax.linear_schedule(0.1, 0.4, 100)
    r = rodflow.compare(_toy(), lr=schedule, flows=("discrete", "stable", "rod"), **TOY)
    d = r.series["discrete"]
    k = np.arange(TOY["steps"] + 1)
    lr = np.asarray([schedule(jnp.int32(i)) for i in k], np.float64)
    np.testing.assert_allclose(d["threshold"], 2.0 / lr, rtol=5e-7)
    assert r.metrics["lr"] == pytest.approx(0.4) and r.metrics["threshold"] == pytest.approx(2.0 / 0.4)
    # the EoS onset compares the sharpness with the threshold of its own step
    onset = r.metrics["eos_onset_step"]
    assert onset is not None
    i = list(d["sharpness_step"]).index(onset)
    assert d["sharpness"][i] > d["threshold"][onset]
    # the rod's curvature (compared with the threshold of its step) follows GD's sharpness
    late = d["sharpness_step"] >= 100
    assert np.median(np.abs(r.series["rod"]["sharpness"][late] / d["sharpness"][late] - 1)) < 0.05


def test_heavy_ball_threshold_moves_with_lr():
    schedule = optax.linear_schedule(0.05, 0.1, 50)
    r = rodflow.compare(_toy(), lr=schedule, flows=("discrete", "rod"), optimizer=rodflow.HeavyBall(beta=0.5),
                        **TOY)
    lr = np.asarray([schedule(jnp.int32(i)) for i in range(TOY["steps"] + 1)], np.float64)
    np.testing.assert_allclose(r.series["discrete"]["threshold"], 3.0 / lr, rtol=5e-7)


def test_sweep_varies_the_peak_and_equals_compare():
    schedule = _warmup(0.1, 0.4, 100)
    top = float(np.max(jax.vmap(schedule)(jnp.arange(TOY["steps"] + 1))))  # its peak
    peaks = [0.3, 0.4]
    s = rodflow.sweep(_toy(), lrs=peaks, schedule=schedule, flows=("discrete", "rod"), **TOY)
    assert s.metrics["lr_schedule"] == "custom"
    for g, peak in enumerate(peaks):
        c = rodflow.compare(_toy(), lr=lambda t, peak=peak: peak / top * schedule(t),
                            flows=("discrete", "rod"), **TOY)
        assert s.runs[g].metrics["lr"] == peak
        np.testing.assert_allclose(s.runs[g].series["discrete"]["lr"], c.series["discrete"]["lr"], rtol=1e-15)
        for run in c.series:
            for key in ("loss", "sharpness"):
                np.testing.assert_allclose(s.runs[g].series[run][key], c.series[run][key], rtol=1e-9,
                                           atol=1e-12, err_msg=f"{peak} {run}/{key}")
    assert "d EoS rod" in s.table()


@pytest.mark.parametrize("bad,match", [
    (lambda t: -0.1, r"`lr`: the schedule must be positive and finite at every step 0..200, but lr\(0\)"),
    (lambda t: jnp.where(t > 50, jnp.nan, 0.1), r"lr\(51\) = "),
    (lambda t: 0.1 if t < 3 else 0.2, "must map a traced step count"),
    (lambda t: jnp.ones(2) * 0.1, "one scalar step size per step"),
])
def test_bad_schedules_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        rodflow.compare(_toy(), lr=bad, **TOY)


def test_bad_sweep_schedule_is_refused():
    with pytest.raises(ValueError, match="`schedule` must be a callable"):
        rodflow.sweep(_toy(), lrs=[0.1], schedule=0.3, **TOY)


def test_save_load_plot_and_resume_with_a_schedule(tmp_path, stop_at_checkpoint):
    schedule = optax.linear_schedule(0.1, 0.4, 100)
    kw = dict(lr=schedule, flows=("discrete", "rod"), steps=200, sharpness_every=5, chunk=50)
    full = rodflow.compare(_toy(), **kw, out=tmp_path / "full")
    loaded = rodflow.load(tmp_path / "full")
    np.testing.assert_array_equal(loaded.series["discrete"]["threshold"],
                                  full.series["discrete"]["threshold"])
    saved = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert saved["lr_schedule"] == "custom" and saved["lr"] == pytest.approx(0.4)
    from rodflow.plot import plot_comparison

    fig = plot_comparison(loaded)
    line = [ln for ln in fig.axes[1].get_lines() if "threshold at lr(t)" in str(ln.get_label())]
    assert len(line) == 1 and np.ptp(line[0].get_ydata()) > 0  # the moving threshold is drawn

    stop_at_checkpoint(lambda: rodflow.compare(_toy(), **kw, out=tmp_path / "cut", figure=False), after=2)
    # the same schedule built again (another function object) resumes
    resumed = rodflow.compare(_toy(), **{**kw, "lr": optax.linear_schedule(0.1, 0.4, 100)},
                              out=tmp_path / "cut", resume=True, figure=False)
    for run in full.series:
        for key in full.series[run]:
            np.testing.assert_allclose(resumed.series[run][key], full.series[run][key], rtol=1e-12,
                                       err_msg=f"{run}/{key}")
    with pytest.raises(ValueError, match="different settings"):
        rodflow.compare(_toy(), **{**kw, "lr": optax.linear_schedule(0.1, 0.3, 100)},
                        out=tmp_path / "cut", resume=True, figure=False)


@pytest.mark.parametrize("args,needle", [
    (["--lr-schedule", "warmup-constant", "--warmup-steps", "50"],
     "`--lr-schedule warmup-constant` needs `--lr-init`"),
    (["--lr-schedule", "warmup-constant", "--lr-init", "0.1"], "needs `--warmup-steps`"),
    (["--warmup-steps", "50"], "`--warmup-steps` is not used by `--lr-schedule constant`"),
    (["--lr-schedule", "linear", "--lr-init", "0.1", "--transition-steps", "0"],
     "`--transition-steps` must be a positive integer"),
    (["--lr-schedule", "warmup-cosine", "--lr-init", "0.1", "--warmup-steps", "50", "--decay-steps", "40",
      "--lr-end", "0.1"], "must exceed `--warmup-steps`"),
    (["--lr-schedule", "wobble"], "invalid choice: 'wobble'"),
])
def test_cli_schedule_errors_exit_2_one_line(args, needle, capsys):
    from rodflow.cli import main

    code = main(["compare", "--problem", "eos-toy", "--lr", "0.4", "--steps", "20", "--no-progress",
                 "--no-figure", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_schedule_runs_saves_and_plots(tmp_path, capsys):
    from rodflow.cli import main

    out = tmp_path / "run"
    code = main(["compare", "--problem", "eos-toy", "--lr-peak", "0.4", "--lr-schedule", "warmup-constant",
                 "--lr-init", "0.1", "--warmup-steps", "100", "--steps", "200", "--sharpness-every", "5",
                 "--flows", "discrete,rod", "--x64", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["lr_schedule"] == {"name": "warmup-constant", "init_value": 0.1, "peak_value": 0.4,
                                "warmup_steps": 100}
    assert m["lr"] == pytest.approx(0.4) and m["threshold"] == pytest.approx(5.0)
    thr = rodflow.load(out).series["discrete"]["threshold"]
    assert thr[0] == pytest.approx(20.0) and thr[-1] == pytest.approx(5.0)
    assert main(["plot", str(out), "--out", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").stat().st_size > 10_000


def test_cli_sweep_scales_the_schedule_to_each_peak(tmp_path, capsys):
    from rodflow.cli import main

    out = tmp_path / "sweep"
    code = main(["sweep", "--problem", "eos-toy", "--lrs", "0.2,0.4", "--lr-schedule", "warmup-constant",
                 "--lr-init", "0.1", "--warmup-steps", "100", "--steps", "150", "--sharpness-every", "5",
                 "--flows", "discrete,rod", "--x64", "--no-progress", "--no-figure", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    s = rodflow.load(out)
    assert s.metrics["lr_schedule"]["name"] == "warmup-constant"
    for run, peak in zip(s.runs, (0.2, 0.4)):
        lr = run.series["discrete"]["lr"]
        assert run.metrics["lr"] == peak and lr[-1] == pytest.approx(peak, rel=1e-6)
        assert lr[0] == pytest.approx(0.1 * peak / 0.4, rel=1e-6)  # the whole schedule is scaled
