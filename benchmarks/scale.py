"""Scaling out (issue 18): compile time, program size and memory against the number of examples
and the number of data-parallel devices, on `cnn-cifar10` with generated CIFAR-shaped files.

    python benchmarks/scale.py [--examples 1000,2000,4000,10000,20000] [--devices 1,2,4]
                               [--devices-examples 2000] [--steps 2] [--out benchmarks/results/scale.json]

Each configuration runs in its own process (the device count is forced with
`XLA_FLAGS=--xla_force_host_platform_device_count=D`, so CPU devices stand in for GPUs), on
generated CIFAR-10 python-pickle files (random uint8 images, the real files' layout; written once
into a temporary folder). A process:

1. runs `rodflow.compare(problem, lr, steps, flows=("discrete", "rod"), devices=D)` (sharpness
   at the first and last step, `--eig-iters` eigensolver iterations) and records each run kind's
   compile time (`compile_s`, JAX's own compile events) and its run time;
2. lowers the loss's gradient with the problem as an argument, placed as the run places it
   (examples split over the `data` axis), and records the program's size (characters of its
   StableHLO text: a data set baked into the program as a constant would make it grow with the
   number of examples) and XLA's memory analysis of the compiled program per device (arguments,
   temporaries and outputs, in bytes);
3. records the process's peak resident memory (`ru_maxrss`; all forced devices share it).

Above `--engine-max-examples` (default 4000) step 1 is skipped: a run's peak memory on this CPU
grows by about 3.3 MB per example (`scale.json`: 5.1 GB at 1,000 examples, 8.3 GB at 2,000,
14.8 GB at 4,000, width 8), so 20k examples would need ~70 GB where the machine has 24 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
cfg = json.loads(sys.argv[1])
import jax
import rodflow
from rodflow._parallel import Layout
p = rodflow.problems.get("cnn-cifar10", data_dir=cfg["data_dir"], n=cfg["n"], width=cfg["width"],
                         hidden=cfg["hidden"])
D = cfg["devices"]
assert len(jax.devices()) == D, jax.devices()
lr = cfg["lr"] if cfg["lr"] else p.lr_hint
out = {"examples": cfg["n"], "devices": D, "dim": p.dim, "lr": lr, "steps": cfg["steps"],
       "dtype": str(p.dtype)}
if cfg["engine"]:
    t0 = time.perf_counter()
    c = rodflow.compare(p, lr=lr, steps=cfg["steps"], flows=("discrete", "rod"), devices=D,
                        sharpness_every=cfg["steps"], eig_iters=cfg["eig_iters"], progress=False,
                        figure=False)
    out.update(total_s=time.perf_counter() - t0,
               compile_s={k: f["compile_s"] for k, f in c.metrics["flows"].items()},
               run_s={k: f["wall_s"] for k, f in c.metrics["flows"].items()},
               final_loss={k: f["final_loss"] for k, f in c.metrics["flows"].items()})
placed = Layout(1, D).place_problem(p)
grad = jax.jit(lambda prob, x: jax.grad(prob.loss_flat)(x))
lowered = grad.lower(placed, p.x0)
out["grad_program_chars"] = len(lowered.as_text())
t1 = time.perf_counter()
compiled = lowered.compile()
out["grad_compile_s"] = time.perf_counter() - t1
m = compiled.memory_analysis()
if m is not None:
    out["grad_memory_per_device"] = {k: int(getattr(m, k)) for k in (
        "argument_size_in_bytes", "temp_size_in_bytes", "output_size_in_bytes") if hasattr(m, k)}
out["data_bytes_per_device"] = int(sum(
    s.data.nbytes for leaf in jax.tree.leaves(placed.loss) if hasattr(leaf, "addressable_shards")
    for s in leaf.addressable_shards[:1]))
out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def write_cifar(root: Path, n: int, seed: int = 0) -> Path:
    """Random CIFAR-10 python-pickle files with `n` training images in all (the real layout)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    per_file = -(-n // 5)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_file).tolist()
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)
    return root


def run_child(cfg: dict, timeout: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={cfg['devices']}",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {**{k: cfg[k] for k in ("examples", "devices")}, "error": proc.stderr[-2000:]}
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", default="1000,2000,4000,10000,20000")
    ap.add_argument("--devices", default="1,2,4")
    ap.add_argument("--devices-examples", type=int, default=2000,
                    help="number of examples of the runs against the device count")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--eig-iters", type=int, default=3,
                    help="eigensolver iterations per sharpness measurement (the programs' shapes do not "
                         "depend on it; fewer keeps the large runs short)")
    ap.add_argument("--engine-max-examples", type=int, default=4000,
                    help="above this many examples only the gradient program is lowered, compiled and "
                         "analysed (no run): a run's peak memory on this CPU grows by ~3.3 MB per example")
    ap.add_argument("--lr", type=float, default=None, help="default: the problem's lr_hint")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    args = ap.parse_args(argv)
    examples = [int(v) for v in args.examples.split(",") if v]
    devices = [int(v) for v in args.devices.split(",") if v]
    plan = [(n, 1) for n in examples] + [(args.devices_examples, d) for d in devices if d != 1]
    if 1 in devices and args.devices_examples not in examples:
        plan.append((args.devices_examples, 1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = write_cifar(Path(tmp) / "cifar-10-batches-py", max(n for n, _ in plan))
        for n, d in plan:
            cfg = dict(data_dir=str(data_dir), n=n, devices=d, steps=args.steps, width=args.width,
                       hidden=args.hidden, lr=args.lr, examples=n,
                       eig_iters=args.eig_iters, engine=n <= args.engine_max_examples)
            t0 = time.perf_counter()
            row = run_child(cfg, args.timeout)
            what = "ERROR" if "error" in row else (
                f"compile {row.get('compile_s')}, gradient program {row['grad_program_chars']} chars, "
                f"compiled in {row['grad_compile_s']:.2f} s, rss {row['max_rss_mb']:.0f} MB")
            print(f"examples {n:>6} devices {d}: {time.perf_counter() - t0:.1f} s {what}", flush=True)
            rows.append(row)
    loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "problem": "cnn-cifar10 (generated CIFAR-10 files: random uint8 images in the real layout)",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_1min_at_end": loadavg},
        "note": ("CPU devices forced with XLA_FLAGS stand in for GPUs: they share the same cores and memory, "
                 "so the run times do not fall with the device count here; the per-device bytes and the "
                 "program sizes are what carries over."),
        "by_examples": [r for r in rows if r.get("devices") == 1],
        "by_devices": [r for r in rows if r.get("examples") == args.devices_examples],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
