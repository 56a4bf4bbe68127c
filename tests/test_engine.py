"""The engine's shape: one settings object, capability checks before any computation, no
import-time side effects, every registered flow configurable from the CLI, work done once."""

import dataclasses
import subprocess
import sys
import textwrap
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rodflow
from rodflow import Settings
from rodflow.cli import build_parser, main


def _toy():
    return rodflow.problems.get("eos-toy")


def test_settings_object_and_keywords_give_the_same_run():
    a = rodflow.compare(_toy(), lr=0.4, steps=60, sharpness_every=5, figure=False)
    b = rodflow.compare(_toy(), lr=0.4, settings=Settings(steps=60, sharpness_every=5, figure=False))
    c = rodflow.compare(_toy(), lr=0.4, settings=Settings(steps=10, sharpness_every=5), steps=60,
                        figure=False)
    for other in (b, c):
        for run in a.series:
            np.testing.assert_array_equal(a.series[run]["loss"], other.series[run]["loss"])


def test_settings_validation_and_unknown_options():
    with pytest.raises(TypeError, match="unknown option.*sharpnes_every"):
        rodflow.compare(_toy(), lr=0.4, steps=10, sharpnes_every=5)
    with pytest.raises(TypeError, match="missing the run setting `steps`"):
        rodflow.compare(_toy(), lr=0.4)
    with pytest.raises(ValueError, match="`chunk` must be a positive integer"):
        Settings(steps=10, chunk=0)
    with pytest.raises(ValueError, match="`start_step` must be an integer step"):
        Settings(steps=10, start_step=10)
    # a ValueError naming the choices (a TypeError where runtime type checking is on, as in tests)
    with pytest.raises((ValueError, TypeError), match="eig_method"):
        Settings(steps=10, eig_method="qr")
    # the sweep takes the same settings
    assert {f.name for f in dataclasses.fields(Settings)} >= {"steps", "chunk", "start_step", "out"}


def test_unsupported_flow_is_one_line_error_before_any_computation(capsys):
    msg = "flow 'central' does not support optimizer 'heavy-ball'"
    with pytest.raises(ValueError, match=msg):
        rodflow.compare(_toy(), lr=0.4, steps=10, flows=("central",), optimizer=rodflow.HeavyBall())
    with pytest.raises(ValueError, match=msg):
        rodflow.sweep(_toy(), lrs=[0.4], steps=10, flows=("central",), optimizer=rodflow.HeavyBall())
    code = main(["compare", "--problem", "eos-toy", "--lr", "0.4", "--steps", "10", "--flows",
                 "discrete,central", "--optimizer", "heavy-ball", "--no-progress", "--no-figure"])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1
    # the same check on a flow the registry does not know of: the nesterov map has no
    # second-order coefficients
    with pytest.raises(ValueError, match="flow 'rod-momentum' does not support optimizer 'nesterov'"):
        rodflow.compare(_toy(), lr=0.4, steps=10, flows=("rod-momentum",), optimizer=rodflow.Nesterov())


def test_every_registered_flow_and_optimizer_option_is_on_the_cli():
    parser = build_parser()
    compare = parser._subparsers._group_actions[0].choices["compare"]
    flags = {s for a in compare._actions for s in a.option_strings}
    for name, cls in rodflow.FLOWS.items():
        for f in dataclasses.fields(cls):
            assert f"--{name}-{f.name.replace('_', '-')}" in flags, (name, f.name)
    for cls in rodflow.MAPS.values():
        for f in dataclasses.fields(cls):
            assert f"--{f.name.replace('_', '-')}" in flags, (cls.name, f.name)
    for f in dataclasses.fields(Settings):
        if f.name not in ("progress", "figure"):
            assert f"--{f.name.replace('_', '-')}" in flags, f.name


@pytest.mark.parametrize("args,needle", [
    (["--optimizer", "gd", "--beta", "0.5"], "optimizer 'gd' has no option beta"),
    (["--flows", "discrete,rod", "--central-k", "2"], "configures the flow 'central', which is not in"),
    (["--flows", "discrete,central", "--central-k", "0"], "`k`"),
])
def test_cli_options_that_do_not_apply_are_errors(args, needle, capsys):
    code = main(["compare", "--problem", "eos-toy", "--lr", "0.4", "--steps", "5", "--no-progress",
                 "--no-figure", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err


def test_cli_flow_options_reach_the_flow(tmp_path):
    a = rodflow.compare(_toy(), lr=0.4, steps=40, flows={"rod": rodflow.RodFlow(dt=0.25, variant="taylor")},
                        figure=False)
    assert main(["compare", "--problem", "eos-toy", "--lr", "0.4", "--steps", "40", "--x64", "--flows",
                 "discrete,rod", "--rod-dt", "0.25", "--rod-variant", "taylor", "--no-progress",
                 "--no-figure", "--out", str(tmp_path)]) == 0
    b = rodflow._io.read_series(tmp_path / "series.npz")
    np.testing.assert_allclose(b["rod"]["loss"], a.series["rod"]["loss"], rtol=1e-12)


def test_warm_start_state_is_computed_once_for_all_flows(monkeypatch):
    from rodflow import _engine

    calls = Counter()

    def counted(fn):
        def wrapper(*args, **kwargs):
            calls[fn.__name__] += 1
            return fn(*args, **kwargs)
        wrapper.__name__ = fn.__name__
        return wrapper

    for name in ("grid_warm_state", "grid_flow_init"):
        monkeypatch.setattr(_engine, name, counted(getattr(_engine, name)))
    flows = {"stable": rodflow.StableFlow(), "rod": rodflow.RodFlow(), "rod2": rodflow.RodFlow(dt=0.25)}
    rodflow.compare(_toy(), lr=0.4, steps=30, flows=flows, start_step=7, figure=False)
    assert calls == {"grid_warm_state": 1, "grid_flow_init": 3}


def test_importing_rodflow_has_no_side_effects():
    code = textwrap.dedent("""
        import sys
        import jax
        from jax._src import monitoring
        before = len(monitoring._event_duration_secs_listeners)
        import rodflow, rodflow.plot, rodflow.cli
        assert len(monitoring._event_duration_secs_listeners) == before, "listener registered at import"
        assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
        import matplotlib
        assert matplotlib.rcParams._get_backend_or_none() is None, "backend chosen at import"
        rodflow.compare(rodflow.problems.get("quartic"), lr=0.2, steps=5, figure=False)
        assert len(monitoring._event_duration_secs_listeners) == before, "listener left after a run"
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


def test_timings_split_compilation_from_execution():
    # a problem of its own size, so that nothing is compiled already
    p = rodflow.problems.get("quadratic", eigenvalues="1,2,3,4,5,6,7", x0="1,1,1,1,1,1,1")
    r = rodflow.compare(p, lr=0.2, steps=200, chunk=50, figure=False)
    for name, m in r.metrics["flows"].items():
        # every run executed 4 chunks: its execution time is positive, and its compilation (the
        # first chunk's trace and compile) is counted once, not once per nested function
        assert m["wall_s"] > 0 and m["compile_s"] > 0, (name, m)


@pytest.mark.parametrize("precision", [None, "default"])
def test_matmul_precision_is_set_for_the_whole_run(precision):
    # every function of the run is traced under `jax.default_matmul_precision(settings.matmul_precision)`
    # (default "highest": float32 products stay float32 on GPUs that would use TF32), and the
    # setting is recorded
    seen = set()
    H = jnp.diag(jnp.asarray([1.0, 3.0, 9.0]))

    def loss(x):
        seen.add(jax.config.jax_default_matmul_precision)
        return 0.5 * x @ H @ x

    opts = {} if precision is None else {"matmul_precision": precision}
    r = rodflow.compare(loss, jnp.ones(3), lr=0.1, steps=20, flows=("stable", "rod"), figure=False,
                        start_step="auto", **opts)
    assert seen == {precision or "highest"}
    assert r.metrics["matmul_precision"] == (precision or "highest")


@pytest.mark.parametrize("xs", [[-1.0, 2.0, -3.0], [1.0, 2.0, 3.0], [-1.0, -2.0, -3.0], [5.0]])
def test_branch_gives_each_lane_its_own_side(xs):
    # rod_average's switch: a cond on "some lane needs this side" inside the engine's grid vmap
    # (named axis), a plain per-lane cond in a user's own vmap, and unbatched for a grid of one
    import jax
    import jax.numpy as jnp

    from rodflow._chunks import over_grid
    from rodflow._lax import branch

    def f(x):
        return branch(x > 0, lambda: {"v": jnp.sqrt(x)}, lambda: {"v": -x * 10.0})

    x = jnp.asarray(xs)
    expected = np.where(np.asarray(xs) > 0, np.sqrt(np.abs(xs)), -np.asarray(xs) * 10.0)
    np.testing.assert_allclose(jax.jit(lambda x: over_grid(f, x))(x)["v"], expected)
    np.testing.assert_allclose(jax.vmap(f)(x)["v"], expected)
