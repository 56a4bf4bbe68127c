"""sweep(): one compiled program over a grid, identical to compare, sharded identically."""

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import jax
import numpy as np
import pytest

import rodflow
from rodflow.cli import main


def count_traces(fn):
    """`fn()` and how often each jitted function was traced meanwhile (JAX's monitoring events)."""
    traces = Counter()

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            traces[kw.get("fun_name")] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        return fn(), traces
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    r, traces = count_traces(lambda: rodflow.sweep(rodflow.problems.get("eos-toy"), lrs=[0.3, 0.4, 0.45],
                                                   steps=300, chunk=100, out=out))
    return r, traces, out


def test_sweep_compiles_once_per_run_kind(toy_sweep):
    r, traces, _ = toy_sweep
    # 3 chunks x 3 step sizes, but one trace for the discrete run and one per flow (stable, rod)
    assert traces["grid_discrete_chunk"] == 1
    assert traces["grid_flow_chunk"] == 2


def test_sweep_matches_compare(toy_sweep):
    r, _, _ = toy_sweep
    for i, lr in enumerate([0.3, 0.4, 0.45]):
        c = rodflow.compare(rodflow.problems.get("eos-toy"), lr=lr, steps=300, figure=False)
        for run in ("discrete", "stable", "rod"):
            for key in ("loss", "sharpness"):
                np.testing.assert_allclose(r.runs[i].series[run][key], c.series[run][key], rtol=1e-9,
                                           atol=1e-12, err_msg=f"lr={lr} {run}/{key}")
        assert r.metrics["runs"][i]["eos_onset_step"] == c.metrics["eos_onset_step"]


def test_sweep_json_and_figure(toy_sweep):
    r, _, out = toy_sweep
    data = json.loads((out / "sweep.json").read_text())
    for key in ("problem", "steps", "lrs", "seeds", "devices", "compile_s", "run_s", "runs"):
        assert key in data
    assert [run["lr"] for run in data["runs"]] == [0.3, 0.4, 0.45]
    assert data["runs"][0]["eos_onset_step"] is None  # lr 0.3: 2/lr = 6.7 > exp(1.8)
    for run in data["runs"][1:]:
        assert run["eos_onset_step"] is not None
        rod = run["flows"]["rod"]
        # Rod Flow's sharpness during EoS is within 5% of 2/lr
        assert abs(rod["sharpness_mean_eos"] * run["lr"] / 2 - 1) < 0.05
    assert (out / "sweep.png").stat().st_size > 10_000


def test_sweep_over_seeds():
    p = rodflow.problems.get("mlp-digits", n=30, width=8)
    r = rodflow.sweep(p, lrs=[0.3, 0.6], seeds=[0, 1], steps=20, flows=("discrete", "rod"), figure=False)
    assert [(run["lr"], run["seed"]) for run in r.metrics["runs"]] == [(0.3, 0), (0.6, 0), (0.3, 1), (0.6, 1)]
    l0 = r.runs[0].series["discrete"]["loss"][0]
    assert l0 == r.runs[1].series["discrete"]["loss"][0]  # same seed, same start
    assert l0 != r.runs[2].series["discrete"]["loss"][0]  # another seed, another start
    with pytest.raises(ValueError, match="init"):
        rodflow.sweep(rodflow.problems.get("quartic"), lrs=[0.1], seeds=[0], steps=5)


def test_sweep_bad_input(capsys):
    with pytest.raises(ValueError, match="`lrs` must be a positive number"):
        rodflow.sweep(rodflow.problems.get("quartic"), lrs=[0.1, -0.2], steps=5)
    assert main(["sweep", "--problem", "quartic", "--steps", "5"]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert main(["sweep", "--problem", "quartic", "--steps", "5", "--lr-range", "0.1:0.2"]) == 2
    assert "start:stop:count" in capsys.readouterr().err


SHARDED = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, rodflow
    assert len(jax.devices()) == 4, jax.devices()
    p = rodflow.problems.get("eos-toy")
    kw = dict(lrs=[0.3, 0.35, 0.4, 0.42, 0.45], steps=120, figure=False)  # 5 points on 4 devices: padded
    a = rodflow.sweep(p, devices=4, **kw)
    b = rodflow.sweep(p, devices=1, **kw)
    assert a.metrics["devices"] == 4 and a.metrics["grid_padded_to"] == 8
    for ra, rb in zip(a.runs, b.runs):
        for run in ra.series:
            for key in ("loss", "sharpness"):
                np.testing.assert_allclose(ra.series[run][key], rb.series[run][key], rtol=1e-12, atol=1e-14)
    print("OK", len(a.runs))
""")


# slow: tests/test_parallel.py's grid x data sweep (2 x 2 mesh, a padded grid) covers the same path
@pytest.mark.slow
def test_sharded_sweep_equals_unsharded():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK 5" in proc.stdout
