"""The command line: output files, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest

from rodflow.cli import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "rodflow.cli", *args], capture_output=True, text=True,
                          timeout=600)


def test_compare_writes_table_metrics_and_figure(tmp_path):
    out = tmp_path / "run"
    proc = _run("compare", "--problem", "eos-toy", "--lr", "0.4", "--steps", "200", "--x64",
                "--out", str(out), "--x-star", "1.8")
    assert proc.returncode == 0, proc.stderr
    assert "rod" in proc.stdout and "stable" in proc.stdout and "EoS onset" in proc.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["problem"] == "eos-toy" and m["lr"] == 0.4 and m["steps"] == 200
    assert m["dtype"] == "float64"
    assert m["eos_onset_step"] is not None
    assert (out / "compare.png").stat().st_size > 10_000
    assert f"wrote {out / 'metrics.json'} and {out / 'compare.png'}" in proc.stdout  # the files it names
    assert "step" in proc.stderr  # the progress bar


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--problem", "nope", "--lr", "0.1", "--steps", "5"], "unknown problem 'nope'"),
        (["--problem", "eos-toy", "--lr", "-0.1", "--steps", "5"], "`lr` must be a positive number"),
        (["--problem", "eos-toy", "--lr", "0.1", "--steps", "0"], "`steps` must be a positive integer"),
        (["--problem", "eos-toy", "--lr", "0.1", "--steps", "5", "--flows", "discrete,wobble"],
         "unknown flow 'wobble'"),
        (["--problem", "mlp-digits", "--lr", "0.1", "--steps", "5", "--widht", "3"], "no option widht"),
        (["--problem", "eos-toy", "--lr", "abc", "--steps", "5"], "invalid float value"),
        (["--problem", "eos-toy", "--lr", "0.4", "--steps", "5", "--flows", "rod", "--rod-order", "2",
          "--rod-growth", "linear"], "it needs growth='map'"),
        (["--problem", "eos-toy", "--lr", "0.4", "--steps", "5", "--rod-growth", "exact"],
         "argument --rod-growth: invalid choice"),
        (["--problem", "eos-toy", "--lr", "0.4", "--steps", "5", "--rod-floor", "rounding",
          "--rod-eps-floor", "1e-6"], "only sets the 'eps' floor"),
        (["--problem", "eos-toy", "--lr", "0.4", "--steps", "5", "--eig-method", "krylov",
          "--eig-iters", "40"], "lower the iterations (eig_iters)"),
    ],
)
def test_bad_input_exit_code_2_one_line(args, needle, capsys):
    code = main(["compare", *args, "--no-progress", "--no-figure"])
    err = capsys.readouterr().err if code is not None else ""
    assert code == 2
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_argparse_errors_are_one_line():
    proc = _run("compare", "--problem", "eos-toy", "--lr", "abc", "--steps", "5")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_divergence_exit_code_3_still_writes(tmp_path):
    proc = _run("compare", "--problem", "quadratic", "--lr", "0.2", "--steps", "300", "--out",
                str(tmp_path), "--no-progress")
    assert proc.returncode == 3, proc.stderr
    assert "became non-finite at step" in proc.stderr
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "compare.png").exists()


def test_short_problem_options_are_not_abbreviations(tmp_path):
    # `--n` must reach the problem, not be read as an abbreviation of `--no-progress`
    code = main(["compare", "--problem", "mlp-digits", "--n", "30", "--width", "4", "--lr", "0.1",
                 "--steps", "3", "--flows", "discrete", "--no-progress", "--no-figure",
                 "--out", str(tmp_path)])
    assert code == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["problem"] == "mlp-digits"


def test_problems_lists_builtins(capsys):
    assert main(["problems"]) == 0
    out = capsys.readouterr().out
    for name in ("quadratic", "quartic", "eos-toy", "mlp-digits"):
        assert name in out


def test_sweep_cli_killed_and_resumed_matches_uninterrupted(tmp_path):
    """SIGKILL a sweep as soon as its first chunk is on disk, resume it, compare with a clean run.
    61 chunks of 10 steps: the run is still going when the first checkpoint appears (measured: 3.5 s
    of chunks left), so the kill lands mid-run."""
    import os
    import signal
    import time

    import numpy as np

    from rodflow import Settings

    args = ["sweep", "--problem", "eos-toy", "--lrs", "0.35,0.4", "--steps", "600", "--chunk", "10",
            "--x64", "--no-figure"]
    n_chunks = Settings(steps=600, chunk=10).plan[0]
    assert n_chunks == 61
    clean = _run(*args, "--out", str(tmp_path / "clean"), "--no-progress")
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "rodflow.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoint.npz"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"the sweep ended (code {proc.returncode}) before it could be killed"
    assert ckpt.exists(), "no checkpoint within 300 s"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # killed, not finished
    assert not (out / "sweep.json").exists()
    with np.load(ckpt) as z:  # a mid-run checkpoint: some chunks done, not all
        assert 1 <= int(z["__next_chunk__"]) < n_chunks
    resumed = _run(*args, "--out", str(out), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "clean" / "sweep.json").read_text())
    b = json.loads((out / "sweep.json").read_text())
    assert [r["lr"] for r in a["runs"]] == [r["lr"] for r in b["runs"]] == [0.35, 0.4]
    compared = 0
    for ra, rb in zip(a["runs"], b["runs"], strict=True):
        assert ra["eos_onset_step"] == rb["eos_onset_step"]
        assert set(ra["flows"]) == set(rb["flows"]) == {"discrete", "stable", "rod"}
        for flow in ra["flows"]:
            for key in ("rel_dist_mean_eos", "rel_dist_mean", "final_loss", "sharpness_mean_eos"):
                va, vb = ra["flows"][flow].get(key), rb["flows"][flow].get(key)
                assert (va is None) == (vb is None), (flow, key, va, vb)
                if va is not None:
                    assert np.isclose(va, vb, rtol=1e-10), (flow, key, va, vb)
                    compared += 1
    # lr 0.4 has an EoS phase (2/lr = 5 < exp(1.8)): its EoS metrics are numbers, not None
    assert b["runs"][1]["eos_onset_step"] is not None and compared >= 10, compared


def test_rod_order_option_reaches_the_flow(tmp_path):
    # `--rod-order 2 --rod-solver heun --rod-dt 1`: the second-order rod with fixed Heun steps, 2
    # evaluations of 4 gradients per step; `--rod-order 3` is refused by the parser (exit 2, one line)
    code = main(["compare", "--problem", "eos-toy", "--lr", "0.4", "--steps", "100", "--x64",
                 "--flows", "discrete,rod", "--rod-order", "2", "--rod-solver", "heun", "--rod-dt", "1",
                 "--no-progress", "--no-figure",
                 "--out", str(tmp_path)])
    assert code == 0
    rod = json.loads((tmp_path / "metrics.json").read_text())["flows"]["rod"]
    assert rod["grad_evals"] == 4 * rod["rhs_evals"] and rod["rhs_evals"] >= 2 * 100
    assert rod["rel_dist_mean_eos"] is not None and rod["diverged_at"] is None
    proc = _run("compare", "--problem", "eos-toy", "--lr", "0.4", "--steps", "5", "--rod-order", "3")
    assert proc.returncode == 2 and "--rod-order" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_krylov_estimator_without_eig_iters_uses_its_default_blocks(tmp_path):
    # `--eig-method krylov` alone: 8 blocks, not LOBPCG's 40 iterations as blocks (a Krylov space
    # of 40 vectors, or the size error on a model with fewer parameters); metrics.json records
    # the eigensolver the run used
    code = main(["compare", "--problem", "mlp-digits", "--n", "40", "--width", "8", "--lr", "0.3",
                 "--steps", "30", "--flows", "discrete", "--eig-method", "krylov", "--no-progress",
                 "--no-figure", "--out", str(tmp_path)])
    assert code == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["eigensolver"] == {"method": "krylov", "resolved": "krylov", "iters": 8, "top_k": 1}
    assert m["sharpness_initial"] > 0
