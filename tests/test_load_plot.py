"""rodflow.load and `rodflow plot`: a run folder read back exactly, its figure redrawn."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import rodflow
from rodflow import _io
from rodflow.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    r = rodflow.compare(rodflow.problems.get("eos-toy"), lr=0.4, steps=60, save_every=20, out=out,
                        progress=False, figure=False)
    return r, out


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    r = rodflow.sweep(rodflow.problems.get("eos-toy"), lrs=[0.3, 0.4], steps=60, out=out, progress=False,
                      figure=False)
    return r, out


def _assert_series_equal(a: dict, b: dict):
    assert list(a) == list(b)
    for run in a:
        assert set(a[run]) == set(b[run]), run
        for key in a[run]:
            np.testing.assert_array_equal(a[run][key], b[run][key], err_msg=f"{run}/{key}")


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000, path


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.startswith("rodflow: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def test_compare_round_trip(compare_run, tmp_path):
    r, out = compare_run
    problem = rodflow.problems.get("eos-toy")
    loaded = rodflow.load(out)
    assert isinstance(loaded, rodflow.Comparison)
    assert (loaded.problem, loaded.lr, loaded.steps) == ("eos-toy", 0.4, 60)
    assert loaded.metrics == json.loads((out / "metrics.json").read_text())
    assert loaded.metrics == _io._clean(r.metrics)
    assert loaded.metrics == r.metrics  # eos-toy's metrics have no NaN or tuples: equal as they are
    assert loaded.table() == r.table()
    _assert_series_equal(loaded.series, r.series)
    assert set(loaded.final) == set(r.final) == {"discrete", "stable", "rod"}
    for name, params in r.final.items():  # final parameters come back flat
        np.testing.assert_array_equal(loaded.final[name], np.asarray(problem.ravel(params)))
    assert set(loaded.snapshots) == set(r.snapshots)
    for name, (steps, snaps) in r.snapshots.items():
        np.testing.assert_array_equal(loaded.snapshots[name][0], steps)
        np.testing.assert_array_equal(loaded.snapshots[name][1], snaps)
    np.testing.assert_array_equal(loaded.snapshots["discrete"][0], [0, 20, 40, 60])
    # a loaded result saves again to the same files
    again = rodflow.load(loaded.save(tmp_path / "again", figure=False))
    assert again.metrics == loaded.metrics
    _assert_series_equal(again.series, loaded.series)
    for name in loaded.final:
        np.testing.assert_array_equal(again.final[name], loaded.final[name])


def test_sweep_round_trip(sweep_run):
    r, out = sweep_run
    problem = rodflow.problems.get("eos-toy")
    loaded = rodflow.load(out)
    assert isinstance(loaded, rodflow.SweepResult)
    assert loaded.metrics == json.loads((out / "sweep.json").read_text())
    assert loaded.metrics == _io._clean(r.metrics) == r.metrics
    assert loaded.table() == r.table()
    assert len(loaded.runs) == len(r.runs) == 2
    for g, (a, b) in enumerate(zip(loaded.runs, r.runs)):
        assert (a.problem, a.lr, a.steps) == (b.problem, b.lr, b.steps) == ("eos-toy", [0.3, 0.4][g], 60)
        assert a.metrics == _io._clean(b.metrics)
        assert a.metrics["threshold"] == b.metrics["threshold"] == pytest.approx(2 / b.lr)
        _assert_series_equal(a.series, b.series)
        for name, params in b.final.items():
            np.testing.assert_array_equal(a.final[name], np.asarray(problem.ravel(params)))
        assert a.snapshots == {}  # the sweep ran without save_every


def test_plot_compare_default_path_never_overwritten_silently(compare_run, capsys):
    _, out = compare_run
    fig = out / "compare.png"
    assert not fig.exists()  # the run was made with figure=False
    assert main(["plot", str(out)]) == 0
    _assert_png(fig)
    assert str(fig) in capsys.readouterr().out
    before = fig.read_bytes()
    fig.write_bytes(b"not a figure")
    assert main(["plot", str(out)]) == 2
    _one_line_error(capsys, str(fig), "--overwrite", "--out")
    assert fig.read_bytes() == b"not a figure"
    assert main(["plot", str(out), "--overwrite"]) == 0
    _assert_png(fig)
    assert len(fig.read_bytes()) == pytest.approx(len(before), rel=0.05)


def test_plot_sweep_to_out(sweep_run, tmp_path, capsys):
    _, out = sweep_run
    fig = tmp_path / "fig.png"
    assert main(["plot", str(out), "--out", str(fig)]) == 0
    _assert_png(fig)
    assert not (out / "sweep.png").exists()
    assert main(["plot", str(out), "--out", str(fig)]) == 2  # an explicit --out is not replaced either
    _one_line_error(capsys, str(fig), "--overwrite")
    assert main(["plot", str(out)]) == 0
    _assert_png(out / "sweep.png")


def test_cli_sweep_folder_loads_and_plots(tmp_path):
    out = tmp_path / "run"
    assert main(["sweep", "--problem", "eos-toy", "--lrs", "0.35,0.4", "--steps", "40", "--x64",
                 "--flows", "discrete,rod", "--no-progress", "--no-figure", "--out", str(out)]) == 0
    loaded = rodflow.load(out)
    assert isinstance(loaded, rodflow.SweepResult)
    assert loaded.metrics == json.loads((out / "sweep.json").read_text())
    assert [c.lr for c in loaded.runs] == [0.35, 0.4]
    for c in loaded.runs:
        assert list(c.series) == ["discrete", "rod"]
        assert len(c.series["rod"]["loss"]) == 41
    assert main(["plot", str(out)]) == 0
    _assert_png(out / "sweep.png")


def test_load_errors(tmp_path, compare_run):
    with pytest.raises(ValueError, match="does not exist"):
        rodflow.load(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a run folder"):
        rodflow.load(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="neither metrics.json .* nor sweep.json") as e:
        rodflow.load(empty)
    assert str(empty) in str(e.value) and "\n" not in str(e.value)
    (empty / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="did not finish"):
        rodflow.load(empty)
    old_sweep = tmp_path / "old-sweep"  # what SweepResult.save wrote before: sweep.json only
    old_sweep.mkdir()
    (old_sweep / "sweep.json").write_text("{}")
    with pytest.raises(ValueError, match="holds sweep.json but not runs.json or series.npz"):
        rodflow.load(old_sweep)
    _, out = compare_run
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text((out / "metrics.json").read_text())
    with pytest.raises(ValueError, match="holds metrics.json but not series.npz"):
        rodflow.load(broken)
    (broken / "series.npz").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="series.npz is unreadable") as e:
        rodflow.load(broken)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("case", ["missing", "empty", "no-out-folder"])
def test_plot_errors_exit_2_one_line(case, tmp_path, compare_run, capsys):
    _, out = compare_run
    args = {"missing": [str(tmp_path / "nope")],
            "empty": [str(tmp_path)],
            "no-out-folder": [str(out), "--out", str(tmp_path / "no" / "fig.png")]}[case]
    assert main(["plot", *args]) == 2
    _one_line_error(capsys, {"missing": "does not exist", "empty": "neither metrics.json",
                             "no-out-folder": "does not exist"}[case])
    assert not (tmp_path / "no").exists()


def test_final_of_an_equinox_model_comes_back_as_problem_ravel(tmp_path):
    # an MLP's final parameters (an Equinox model with non-array leaves) are stored as the flat
    # vector Problem.ravel makes, so problem.unravel rebuilds the model
    problem = rodflow.problems.get("mlp-digits", n=30, width=4)
    c = rodflow.Comparison("mlp-digits", 0.1, 0, {"problem": "mlp-digits", "lr": 0.1, "steps": 0},
                           {"discrete": {"step": np.arange(1), "loss": np.ones(1)}},
                           {"discrete": problem.params0}, {})
    loaded = rodflow.load(c.save(tmp_path, figure=False))
    np.testing.assert_array_equal(loaded.final["discrete"], np.asarray(problem.x0))
    assert loaded.final["discrete"].dtype == problem.x0.dtype
    rebuilt = problem.unravel(jnp.asarray(loaded.final["discrete"]))
    assert float(problem.loss(rebuilt)) == float(problem.loss(problem.params0))
