"""Runs beyond one device: data-parallel compare, grid x data sweeps, several processes.

The multi-device checks run in subprocesses with `--xla_force_host_platform_device_count`
(CPU devices stand in for GPUs; the flag must be set before JAX starts)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rodflow
from rodflow._parallel import Layout, check_layout, examples
from rodflow.cli import main


def _env(devices: int) -> dict:
    flags = f"--xla_force_host_platform_device_count={devices}"
    return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")


def _python(code: str, devices: int, *argv: str, timeout: int = 900, env: dict | None = None, cwd=None):
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env=env or _env(devices), timeout=timeout, cwd=cwd)


def test_builtin_losses_say_how_their_data_splits():
    assert examples(rodflow.problems.get("mlp-digits", n=40)) == 40
    from rodflow.problems._losses import CrossEntropyLoss

    assert CrossEntropyLoss(jnp.zeros((12, 5)), jnp.eye(3)[jnp.zeros(12, int)]).examples == 12
    assert examples(rodflow.problems.get("eos-toy")) is None
    layout = Layout(1, 1)
    p = rodflow.problems.get("mlp-digits", n=40)
    x = p.x0
    assert layout.place_problem(p) is p and layout.place_grid(x) is x


def test_layouts_that_cannot_run_are_refused_in_one_line(capsys):
    with pytest.raises(ValueError, match="examples do not split evenly over 3 data devices"):
        check_layout(rodflow.problems.get("mlp-digits", n=40), 1, 3, available=4)
    with pytest.raises(ValueError, match="need a loss that says how its data splits"):
        check_layout(rodflow.problems.get("eos-toy"), 1, 2, available=4)
    with pytest.raises(ValueError, match="`devices` must be between 1 and the 1 device"):
        rodflow.compare(rodflow.problems.get("mlp-digits", n=40), lr=0.1, steps=3, devices=2)
    with pytest.raises(ValueError, match="`devices` must be a positive integer"):
        rodflow.compare(rodflow.problems.get("mlp-digits", n=40), lr=0.1, steps=3, devices=0)
    with pytest.raises(ValueError, match=r"`devices` \(1\) must be a multiple of `data_devices` \(2\)"):
        rodflow.sweep(rodflow.problems.get("mlp-digits", n=40), lrs=[0.1], steps=3, devices=1, data_devices=2)
    assert main(["compare", "--problem", "mlp-digits", "--n", "40", "--lr", "0.1", "--steps", "3",
                 "--devices", str(len(jax.devices()) + 1), "--no-progress", "--no-figure"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rodflow: error: `devices` must be between 1") and err.count("\n") == 1


# Every metric of a 4-device data-parallel run against the one-device run (float64): gradients,
# HVPs, third derivatives and eigensolves of a loss whose mean is reduced across devices.
DATA_PARALLEL = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import rodflow
    assert len(jax.devices()) == 4, jax.devices()
    name, lr, options, flows = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
    p = rodflow.problems.get(name, **options)
    kw = dict(lr=lr, steps=40, sharpness_every=5, flows=flows.split(","), progress=False, figure=False)
    one = rodflow.compare(p, **kw)
    four = rodflow.compare(p, devices=4, **kw)
    assert four.metrics["mesh"] == {"grid": 1, "data": 4}, four.metrics["mesh"]
    assert four.series["discrete"]["loss"].shape == one.series["discrete"]["loss"].shape
    def flat(d, pre=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, pre + k + "/")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                yield pre + k, v
    a, b = dict(flat(one.metrics)), dict(flat(four.metrics))
    skip = ("wall_s", "compile_s", "mesh/")
    keys = [k for k in a if not any(s in k for s in skip)]
    bad = [(k, a[k], b[k]) for k in keys if abs(a[k] - b[k]) > 1e-9 * max(abs(a[k]), 1e-300)]
    assert not bad, bad
    for run in one.series:
        for key in ("loss", "sharpness"):
            x, y = one.series[run][key], four.series[run][key]
            assert abs(x - y).max() <= 1e-9 * abs(x).max(), (run, key)
    print("OK", len(keys))
""")


# The slow suite runs the discrete run (gradients, HVPs, eigensolves) and the rod (third
# derivatives), then gradient flow and Central Flow (eigensolves of the flow, cone problem), and a
# CNN.
@pytest.mark.parametrize("name,lr,options,flows", [
    # slow: the two-process test's CLI data-parallel compare covers this path against one device
    pytest.param("mlp-digits", 0.07, dict(n=64, width=16), "discrete,rod", marks=pytest.mark.slow),
    pytest.param("mlp-digits", 0.07, dict(n=64, width=16), "discrete,stable,rod,central",
                 marks=pytest.mark.slow),
    pytest.param("cnn-digits", 0.5, dict(n=32, width=4, hidden=8), "discrete,stable,rod,central",
                 marks=pytest.mark.slow),
])
def test_data_parallel_compare_equals_one_device(name, lr, options, flows):
    proc = _python(DATA_PARALLEL, 4, name, str(lr), json.dumps(options), flows)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split("OK")[1]) >= 10 * len(flows.split(","))  # the metrics compared


# A sweep on a 2-D mesh: 2 grid shards x 2 data shards, 3 step sizes (padded to 4)
MESH_SWEEP = textwrap.dedent("""
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, rodflow
    p = rodflow.problems.get("mlp-digits", n=64)
    kw = dict(lrs=[0.05, 0.07, 0.09], steps=40, sharpness_every=5, flows=["discrete", "rod"], progress=False,
              figure=False)
    a = rodflow.sweep(p, devices=4, data_devices=2, **kw)
    b = rodflow.sweep(p, devices=1, **kw)
    assert a.metrics["mesh"] == {"grid": 2, "data": 2} and a.metrics["grid_padded_to"] == 4
    for ra, rb in zip(a.runs, b.runs, strict=True):
        for run in rb.series:
            for key in ("loss", "sharpness"):
                np.testing.assert_allclose(ra.series[run][key], rb.series[run][key], rtol=1e-9, atol=0)
    print("OK", len(a.runs))
""")


# slow: the two-process test's API sweep runs the same 2 x 2 mesh against one process
@pytest.mark.slow
def test_grid_by_data_mesh_sweep_equals_unsharded():
    proc = _python(MESH_SWEEP, 4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK 3" in proc.stdout


# One process of a two-process run (2 CPU devices each, 4 in all): the CLI joins the processes
# and runs a data-parallel compare; the API then runs a grid x data sweep on the same processes.
PROCESS = textwrap.dedent("""
    import sys
    import jax
    from rodflow.cli import main
    port, pid = sys.argv[1], sys.argv[2]
    code = main(["compare", "--problem", "mlp-digits", "--n", "64", "--lr", "0.07", "--steps", "20",
                 "--sharpness-every", "5", "--x64", "--devices", "4", "--flows", "discrete",
                 "--no-progress", "--no-figure",
                 "--out", "compare", "--coordinator", f"localhost:{port}", "--num-processes", "2",
                 "--process-id", pid])
    assert code == 0, code
    assert jax.process_count() == 2 and len(jax.devices()) == 4 and len(jax.local_devices()) == 2
    import rodflow
    rodflow.sweep(rodflow.problems.get("mlp-digits", n=64), lrs=[0.05, 0.07, 0.09], steps=20,
                  sharpness_every=5, flows=["discrete", "rod"], devices=4, data_devices=2, progress=False,
                  figure=False, out="sweep")
    print("DONE", pid)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_run_as_one_and_write_one_set_of_files(tmp_path):
    port = str(_free_port())
    dirs = [tmp_path / f"process{i}" for i in range(2)]
    procs = []
    for i, d in enumerate(dirs):
        d.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", PROCESS, port, str(i)], cwd=d, env=_env(2),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "DONE 0" in outs[0][0] and "DONE 1" in outs[1][0]
    # one table and one message, printed by process 0
    assert "metrics.json" in outs[0][0] and "metrics.json" not in outs[1][0]
    assert not any(dirs[1].iterdir())  # process 1 wrote nothing
    # the numbers equal one process's (this one: 1 device, float64)
    p = rodflow.problems.get("mlp-digits", n=64)
    kw = dict(steps=20, sharpness_every=5, progress=False, figure=False)
    ref = rodflow.compare(p, lr=0.07, flows=["discrete"], **kw)
    got = rodflow.load(dirs[0] / "compare")
    assert got.metrics["processes"] == 2 and got.metrics["mesh"] == {"grid": 1, "data": 4}
    for run in ref.series:
        for key in ("loss", "sharpness"):
            np.testing.assert_allclose(got.series[run][key], ref.series[run][key], rtol=1e-9, atol=0)
    ref_sweep = rodflow.sweep(p, lrs=[0.05, 0.07, 0.09], flows=["discrete", "rod"], **kw)
    got_sweep = json.loads((dirs[0] / "sweep" / "sweep.json").read_text())
    assert got_sweep["mesh"] == {"grid": 2, "data": 2} and got_sweep["processes"] == 2
    for ra, rb in zip(got_sweep["runs"], ref_sweep.metrics["runs"], strict=True):
        for flow in rb["flows"]:
            for key, v in rb["flows"][flow].items():
                if isinstance(v, float) and not key.endswith("_s"):
                    assert ra["flows"][flow][key] == pytest.approx(v, rel=1e-9, abs=1e-300), (flow, key)


def test_data_is_an_argument_of_the_compiled_chunk_not_a_constant():
    """The discrete run's compiled chunk for 40 and for 400 examples: the same program but for the
    shapes in its type annotations. The 400 examples baked in as a constant would add their
    ~470 kB of text (400 x 74 float64 values)."""
    from rodflow._chunks import grid_discrete_chunk, grid_discrete_init
    from rodflow._spectrum import initial_vectors

    sizes = []
    for n in (40, 400):
        p = rodflow.problems.get("mlp-digits", n=n, width=8)
        lr, x0 = jnp.asarray([0.07]), p.x0[None]
        carry = grid_discrete_init(p, rodflow.GradientDescent(), lr, x0, initial_vectors(p.dim, 1, x0.dtype))
        k0, n_last = jnp.asarray(0, jnp.int32), jnp.asarray(10, jnp.int32)
        lowered = grid_discrete_chunk.lower(p, rodflow.GradientDescent(), lr, carry, k0, n_last, n_blocks=1,
                                            every=10, eig=rodflow.Settings(steps=10).eig, snapshots=False)
        sizes.append(len(lowered.as_text()))
    assert abs(sizes[1] - sizes[0]) < 0.01 * sizes[0], sizes


@pytest.mark.slow
def test_two_processes_killed_and_resumed_equal_one_process(tmp_path):
    """A two-process sweep (4 devices in all) SIGKILLed as soon as its first checkpoint is on
    disk, resumed by two new processes: its results equal a one-process run's (to 1e-9, or 1e-14
    absolute for values at the rounding floor, such as a final loss of 1.6e-18)."""
    import signal
    import time

    args = ["sweep", "--problem", "eos-toy", "--lrs", "0.35,0.4", "--steps", "600", "--chunk", "10", "--x64",
            "--devices", "4", "--no-figure", "--no-progress"]
    out = tmp_path / "run"

    def start(*extra):
        port = str(_free_port())
        return [subprocess.Popen([sys.executable, "-m", "rodflow.cli", *args, "--out", str(out), *extra,
                                  "--coordinator", f"localhost:{port}", "--num-processes", "2",
                                  "--process-id", str(i)], env=_env(2), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True) for i in range(2)]

    procs = start()
    deadline = time.time() + 300
    while not (out / "checkpoint.npz").exists() and time.time() < deadline and procs[0].poll() is None:
        time.sleep(0.05)
    assert procs[0].poll() is None, "the sweep ended before it could be killed"
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    assert not (out / "sweep.json").exists()
    procs = start("--resume")
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    got = json.loads((out / "sweep.json").read_text())
    assert got["processes"] == 2 and got["mesh"] == {"grid": 4, "data": 1}
    ref = rodflow.sweep(rodflow.problems.get("eos-toy"), lrs=[0.35, 0.4], steps=600, chunk=10, progress=False,
                        figure=False)
    for ra, rb in zip(got["runs"], ref.metrics["runs"], strict=True):
        assert ra["eos_onset_step"] == rb["eos_onset_step"]
        for flow, m in rb["flows"].items():
            for key, v in m.items():
                if isinstance(v, float) and not key.endswith("_s"):
                    assert ra["flows"][flow][key] == pytest.approx(v, rel=1e-9, abs=1e-14), (flow, key)
