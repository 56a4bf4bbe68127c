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


def test_problems_lists_builtins(capsys):
    assert main(["problems"]) == 0
    out = capsys.readouterr().out
    for name in ("quadratic", "quartic", "eos-toy", "mlp-digits"):
        assert name in out
