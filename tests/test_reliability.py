"""Nothing silently wrong, nothing lost: resume refuses changed settings, run folders are not
overwritten, writes are atomic, bad input and interruptions give one-line messages."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import rodflow
from rodflow import _io
from rodflow.cli import main

TOY = ["--problem", "eos-toy", "--lr", "0.4", "--x64", "--no-progress", "--no-figure"]


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "rodflow.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _interrupted_run(tmp_path, stop_at_checkpoint, **kw):
    """A compare into `tmp_path` stopped after its first checkpoint."""
    stop_at_checkpoint(lambda: rodflow.compare(rodflow.problems.get("eos-toy"), lr=0.4, steps=100, chunk=20,
                                               out=tmp_path, **kw))


@pytest.mark.parametrize("change,needle", [
    (dict(flows={"rod": rodflow.RodFlow(dt=0.25)}), "flows"),
    (dict(params=np.array([0.5, 0.1])), "x0"),
    (dict(sharpness_every=5), "every"),
])
def test_resume_refuses_changed_settings_naming_them(tmp_path, stop_at_checkpoint, change, needle):
    _interrupted_run(tmp_path, stop_at_checkpoint, flows={"rod": rodflow.RodFlow()})
    kw = dict(lr=0.4, steps=100, chunk=20, out=tmp_path, resume=True, flows={"rod": rodflow.RodFlow()})
    params = change.pop("params", None)
    problem = rodflow.problems.get("eos-toy")
    with pytest.raises(ValueError, match=f"different settings \\(.*{needle}: .* in the checkpoint"):
        rodflow.compare(problem, params, **{**kw, **change})
    # unchanged, it resumes
    rodflow.compare(problem, **kw)


# slow: test_resume_refuses_changed_settings_naming_them covers the refusal through the API
@pytest.mark.slow
def test_cli_resume_with_other_problem_options_is_refused(tmp_path):
    args = ["compare", *TOY, "--steps", "200", "--chunk", "20", "--out", str(tmp_path / "w")]
    assert _cli(*args).returncode == 0
    (tmp_path / "w" / "metrics.json").unlink()  # as if interrupted: only the checkpoint is left
    for extra, needle in ((["--x0", "0.5,0.1"], "x0:"), (["--rod-dt", "0.05"], "flows:")):
        proc = _cli(*args, "--resume", *extra)
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_existing_run_folder_is_refused_unless_resume_or_overwrite(tmp_path):
    p = rodflow.problems.get("eos-toy")
    rodflow.compare(p, lr=0.4, steps=30, out=tmp_path)
    assert (tmp_path / "compare.png").exists()
    with pytest.raises(ValueError, match="already holds a run .*resume=True.*overwrite=True"):
        rodflow.compare(p, lr=0.3, steps=30, out=tmp_path)
    with pytest.raises(ValueError, match="already holds a run"):
        rodflow.sweep(p, lrs=[0.3], steps=30, out=tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["lr"] == 0.4  # untouched
    rodflow.compare(p, lr=0.3, steps=30, out=tmp_path, overwrite=True, figure=False)
    assert json.loads((tmp_path / "metrics.json").read_text())["lr"] == 0.3
    assert not (tmp_path / "compare.png").exists()  # no stale figure beside the new metrics
    code = main(["compare", *TOY, "--steps", "30", "--out", str(tmp_path)])
    assert code == 2


def test_failed_write_keeps_the_previous_checkpoint_and_leaves_no_debris(tmp_path, stop_at_checkpoint,
                                                                         monkeypatch):
    p = rodflow.problems.get("eos-toy")
    _interrupted_run(tmp_path, stop_at_checkpoint)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    chunks_before = sorted(f.name for f in (tmp_path / "checkpoint.chunks").iterdir())
    assert chunks_before == ["000000.npz"]  # one file per finished chunk

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        rodflow.compare(p, lr=0.4, steps=100, chunk=20, out=tmp_path, resume=True)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["checkpoint.chunks", "checkpoint.npz"]
    assert sorted(f.name for f in (tmp_path / "checkpoint.chunks").iterdir()) == chunks_before


@pytest.mark.parametrize("garble", [lambda b: b[: len(b) // 2], lambda b: b"garbage" * 10])
def test_unreadable_checkpoint_is_one_line_error(tmp_path, stop_at_checkpoint, garble, capsys):
    _interrupted_run(tmp_path, stop_at_checkpoint)
    ckpt = tmp_path / "checkpoint.npz"
    ckpt.write_bytes(garble(ckpt.read_bytes()))
    code = main(["compare", *TOY, "--steps", "100", "--chunk", "20", "--out", str(tmp_path), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint.npz is unreadable" in err and len(err.strip().splitlines()) == 1


def test_missing_chunk_file_is_one_line_error(tmp_path, stop_at_checkpoint):
    _interrupted_run(tmp_path, stop_at_checkpoint)
    (tmp_path / "checkpoint.chunks" / "000000.npz").unlink()
    with pytest.raises(_io.CheckpointError, match="checkpoint.npz is unreadable .*FileNotFoundError") as e:
        rodflow.compare(rodflow.problems.get("eos-toy"), lr=0.4, steps=100, chunk=20, out=tmp_path,
                        resume=True)
    assert len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize("out,needle", [("FILE", "is a file"), ("/proc/x", "not a writable folder")])
def test_bad_out_is_refused_before_any_computation(tmp_path, out, needle, capsys):
    if out == "FILE":
        out = tmp_path / "f"
        out.write_text("x")
    t = time.perf_counter()
    code = main(["compare", *TOY, "--steps", "100000", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert time.perf_counter() - t < 5  # nothing was computed


@pytest.mark.parametrize("args,needle", [
    (["--steps", "3000000000"], "`steps` must be at most"),
    (["--steps", "10", "--top-k", "5"], "`top_k` (5) must be at most the number of parameters (2)"),
])
def test_size_limits_are_one_line_errors(args, needle, capsys):
    assert main(["compare", *TOY, *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_problem_options_are_type_checked(capsys):
    assert main(["compare", "--problem", "mlp-digits", "--n", "2.5", "--lr", "0.1", "--steps", "3",
                 "--no-progress", "--no-figure"]) == 2
    assert "option `n` must be a whole number, got 2.5" in capsys.readouterr().err


def test_cifar_labels_outside_0_to_9_are_refused(tmp_path):
    from rodflow.problems import _data

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name, labels in (("data_batch_1", [0, 3, -1, 2]), ("test_batch", [0, 1, 2, 3])):
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": labels}, fh)
    with pytest.raises(ValueError, match="labels must be integers in 0..9, found values from -1 to 3"):
        _data.load_cifar10(root, n=4)


def test_sweep_reports_diverged_grid_points(tmp_path):
    proc = _cli("sweep", "--problem", "eos-toy", "--lrs", "0.4,50", "--steps", "40", "--no-progress",
                "--no-figure", "--out", str(tmp_path / "s"))
    assert proc.returncode == 3, proc.stderr
    assert "lr=50" in proc.stderr and "non-finite at step" in proc.stderr
    assert "WARNING: lr=50" in proc.stdout
    assert "lr=0.4" not in proc.stderr


def _until_checkpoint(proc, ckpt, limit=300):
    deadline = time.time() + limit
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)


def test_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path):
    out = tmp_path / "run"
    args = ["compare", *TOY, "--steps", "3000", "--chunk", "20", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "rodflow.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _until_checkpoint(proc, out / "checkpoint.npz")
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "saved in" in err and "checkpoint.npz" in err
    command = err.split("Continue with: rodflow ", 1)[1].split()
    assert command[-1] == "--resume" or "--resume" in command
    resumed = _cli(*command)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3000


# slow: test_cli's sweep kill-and-resume and test_compare's interrupted-resume test cover the same
# path in the default suite; these loops kill repeatedly
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["compare", "sweep"])
def test_killed_and_resumed_runs_equal_an_uninterrupted_run(tmp_path, kind):
    """Kill a run at random points (SIGINT and SIGKILL, several times, bounded in time), resume it
    each time, and compare its final results with an uninterrupted run's (timings aside)."""
    rng = np.random.default_rng(0)
    common = ["--problem", "eos-toy", "--x64", "--no-figure", "--no-progress", "--steps", "1200",
              "--chunk", "40"]
    common += ["--lr", "0.4"] if kind == "compare" else ["--lrs", "0.35,0.4"]
    name = "metrics.json" if kind == "compare" else "sweep.json"
    clean = _cli(kind, *common, "--out", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "killed"
    kills, deadline = 0, time.time() + 100
    while not (out / name).exists() and time.time() < deadline:
        resume = ["--resume"] if (out / "checkpoint.npz").exists() else []
        proc = subprocess.Popen([sys.executable, "-m", "rodflow.cli", kind, *common, "--out", str(out),
                                 *resume], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(3.0, 12.0)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if kills % 2 == 0 else signal.SIGKILL)
            kills += 1
        proc.wait(timeout=120)
    if not (out / name).exists():
        assert _cli(kind, *common, "--out", str(out), "--resume").returncode == 0
    assert kills >= 1
    a = json.loads((tmp_path / "clean" / name).read_text())
    b = json.loads((out / name).read_text())
    assert _without_timings(a) == _without_timings(b)
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items()
                if k not in ("wall_s", "compile_s", "run_s", "total_s")}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def test_solver_step_limit_is_not_reported_as_divergence():
    # gradient flow on a quadratic at lr 50 is stiff (lr * lambda = 1500): Tsit5 hits its step
    # limit while the loss is already ~1e-17, which is not a divergence of the flow
    r = rodflow.compare(rodflow.problems.get("quadratic"), lr=50.0, steps=60, flows=("stable",),
                        figure=False)
    m = r.metrics["flows"]["stable"]
    assert m["diverged_at"] is None
    assert m["solver_result"] == "max_steps_reached" and 0 < m["solver_stopped_at"] < 60
    assert np.all(np.isfinite(r.series["stable"]["loss"][: m["solver_stopped_at"]]))
    assert r.series["stable"]["loss"][m["solver_stopped_at"] - 1] < 1e-10
    assert any("ODE solver stopped at step" in line for line in r.diverged())
    assert r.metrics["flows"]["discrete"]["diverged_at"] is not None  # GD itself does diverge (lr*30 > 2)


def test_a_stopped_grid_point_is_frozen_and_does_not_hold_the_others():
    # lr 50 stops the stiff gradient flow at its step limit; afterwards that grid point is frozen
    # (it stands still), so it costs one block at the cap and little more, and the healthy grid
    # point beside it does exactly the work it does alone
    quad, stable = rodflow.problems.get("quadratic"), rodflow.StableFlow()
    kw = dict(steps=60, flows={"stable": stable}, sharpness_every=10, figure=False, progress=False)
    grid = rodflow.sweep(quad, lrs=[0.02, 50.0], **kw).metrics["runs"]
    alone = rodflow.compare(quad, lr=0.02, **kw).metrics["flows"]["stable"]
    healthy, stopped = grid[0]["flows"]["stable"], grid[1]["flows"]["stable"]
    assert healthy["rhs_evals"] == alone["rhs_evals"] and "solver_stopped_at" not in healthy
    assert stopped["solver_result"] == "max_steps_reached"
    # one block at the step cap, then the frozen flow stands still: a few long steps a block
    blocks_run = stopped["solver_stopped_at"] // 10 + 1
    later_blocks = 6 - blocks_run + 1
    cap = blocks_run * stable.max_steps(10) + later_blocks * 10
    assert stopped["rhs_evals"] <= cap * stable.evals_per_step()


@pytest.mark.parametrize("args,needle", [
    (["--optimizer", "heavy-ball", "--beta", "1.5"], "'heavy-ball': `beta` must be a number in [0, 1)"),
    (["--optimizer", "adam", "--eps", "-1"], "optimizer 'adam': `eps` must be a number >= 0, got -1.0"),
    (["--optimizer", "adam", "--beta1", "1.0"], "optimizer 'adam': `beta1` must be a number in [0, 1)"),
    (["--optimizer", "gd", "--beta", "0.5"], "optimizer 'gd' has no option beta"),
    (["--flows", "discrete,stable", "--stable-rtol", "-1"], "`rtol` must be a number in (0, 1)"),
])
def test_optimizer_and_flow_options_are_validated_up_front(args, needle, capsys):
    t = time.perf_counter()
    assert main(["compare", *TOY, "--steps", "100000", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert time.perf_counter() - t < 5  # before any computation


def test_optimizer_hyperparameters_are_validated_in_the_api():
    for make, needle in ((lambda: rodflow.HeavyBall(beta=1.5), "`beta` must be"),
                         (lambda: rodflow.Adam(beta1=1.0), "`beta1` must be"),
                         (lambda: rodflow.RMSProp(beta2=-0.1), "`beta2` must be"),
                         (lambda: rodflow.AdamW(weight_decay=-1e-4), "`weight_decay` must be"),
                         (lambda: rodflow.Adam(bias_correction="yes"), "bias_correction")):
        # (a TypeError where runtime type checking is on, as in these tests, for the wrong type)
        with pytest.raises((ValueError, TypeError), match=needle):
            make()
    with pytest.raises(ValueError, match="optimizer 'gd' has no option beta"):
        rodflow.make_map("gd", beta=0.5)
