"""Sweep throughput (issue 5): one vmapped sweep vs sequential compare calls vs a sharded sweep.

    python benchmarks/sweep_throughput.py [--lrs 16] [--steps 1000] [--out FILE.json]
    python benchmarks/sweep_throughput.py --gpu --lrs 64 --out benchmarks/results/sweep_throughput_gpu.json
    python benchmarks/sweep_throughput.py --batching-only --lrs 16
    python benchmarks/sweep_throughput.py --split --steps 500 --out benchmarks/results/sweep_split.json
    python benchmarks/sweep_throughput.py --split --steps 500 --eig-method krylov \
        --out benchmarks/results/sweep_split_krylov.json

On `mlp-digits` (float32 by default, `--x64` for float64), flows `discrete` + `rod`:
  (a) one `rodflow.sweep` call over all step sizes,
  (b) sequential `rodflow.compare` calls in one process (compiled programs are reused),
  (c) the sweep sharded over 2 forced host devices (CPU only).
Each variant runs in its own process; end-to-end wall time includes compilation. Peak memory
is the process's max RSS (CPU) or the device's peak bytes in use (GPU). With `--gpu` it also
times a single compare run, to give the per-lr cost of the sweep relative to one run. With
`--batching-only` it times one gradient, HVP and LOBPCG solve alone and vmapped over `--lrs`
parameter vectors: the most any sweep can gain from batching on this machine. With `--split`
it runs (a) and (b) only, twice: with the default rod and with `RodFlow(rho_switch=0)` (finite
differences at every rod length, no switch to the Hessian-vector product below `rho_switch`),
and reports each run kind's execution time (`run_s_by_kind`, compilation excluded) and its
ratio sweep / sequential: where a sweep loses its time. `--eig-method krylov` measures the
sharpness with the fixed-cost Krylov estimator instead of LOBPCG (no loop to wait on).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, time
import jax
cfg = json.loads(sys.argv[1])
if cfg["x64"]:
    jax.config.update("jax_enable_x64", True)
import numpy as np
import rodflow
p = rodflow.problems.get("mlp-digits")
lrs = np.linspace(cfg["lr_min"], cfg["lr_max"], cfg["n_lrs"]).tolist()
rod = {} if cfg.get("rho_switch") is None else {"rho_switch": cfg["rho_switch"]}
eig = {} if cfg.get("eig_method") is None else {"eig_method": cfg["eig_method"]}
kw = dict(steps=cfg["steps"], flows={"rod": rodflow.RodFlow(**rod)}, figure=False, **eig)
t0 = time.perf_counter()
out = {"variant": cfg["variant"], "devices": len(jax.devices()), "device": str(jax.devices()[0])}
if cfg["variant"] in ("sweep", "sweep_sharded"):
    r = rodflow.sweep(p, lrs=lrs, **kw)
    out.update(compile_s=r.metrics["compile_s"], run_s=r.metrics["run_s"])
    runs = r.metrics["runs"]
    out["run_s_by_kind"] = {k: sum(x["flows"][k]["wall_s"] for x in runs) for k in runs[0]["flows"]}
elif cfg["variant"] == "single":
    c = rodflow.compare(p, lr=lrs[len(lrs) // 2], **kw)
    runs = [{"lr": c.lr, "eos_onset_step": c.metrics["eos_onset_step"],
             "eos_onset_rule": c.metrics["eos_onset_rule"], "flows": c.metrics["flows"]}]
    out.update(compile_s=sum(f["compile_s"] for f in c.metrics["flows"].values()),
               run_s=sum(f["wall_s"] for f in c.metrics["flows"].values()))
elif cfg["variant"] == "batching":
    # How much cheaper is a gradient, an HVP or an eigensolve inside a vmapped batch of n_lrs than
    # on its own? A sweep does the same operations as sequential runs, so it cannot beat them by
    # more than this.
    x0 = p.x0
    xs = x0 + 1e-3 * jax.random.normal(jax.random.PRNGKey(1), (cfg["n_lrs"],) + x0.shape, x0.dtype)
    g1 = jax.jit(jax.grad(p.loss_flat))
    gb = jax.jit(jax.vmap(jax.grad(p.loss_flat)))
    def med(f, x, reps=20):
        ts = []
        for _ in range(reps):
            t = time.perf_counter(); f(x).block_until_ready(); ts.append(time.perf_counter() - t)
        return float(np.median(ts))
    from rodflow._derivatives import hvp
    from rodflow._spectrum import initial_vectors, top_eigenpairs
    h1 = jax.jit(lambda x: hvp(p.loss_flat, x, x))
    hb = jax.jit(jax.vmap(lambda x: hvp(p.loss_flat, x, x)))
    U0 = initial_vectors(x0.shape[0], 1, x0.dtype)
    e1 = jax.jit(lambda x: top_eigenpairs(p.loss_flat, x, U0, method="lobpcg")[0])
    from rodflow._lax import GRID_AXIS  # the engine's axis: the eigensolver's fallback stays a cond
    eb = jax.jit(jax.vmap(lambda x: top_eigenpairs(p.loss_flat, x, U0, method="lobpcg")[0],
                          axis_name=GRID_AXIS))
    n = cfg["n_lrs"]
    out["batch"] = n
    for what, f1, fb in (("grad", g1, gb), ("hvp", h1, hb), ("lobpcg", e1, eb)):
        f1(x0).block_until_ready(), fb(xs).block_until_ready()
        reps = 5 if what == "lobpcg" else 20
        single_s, batch_s = med(f1, x0, reps), med(fb, xs, reps)
        out[what] = {"single_s": single_s, "batch_s": batch_s,
                     "per_item_batched_over_single": batch_s / n / single_s,
                     "max_speedup_from_batching": n * single_s / batch_s}
    print("RESULT " + json.dumps(out))
    raise SystemExit(0)
else:
    runs, comp, run = [], 0.0, 0.0
    for lr in lrs:
        c = rodflow.compare(p, lr=lr, **kw)
        runs.append({"lr": lr, "eos_onset_step": c.metrics["eos_onset_step"],
                     "eos_onset_rule": c.metrics["eos_onset_rule"], "flows": c.metrics["flows"]})
        comp += sum(f["compile_s"] for f in c.metrics["flows"].values())
        run += sum(f["wall_s"] for f in c.metrics["flows"].values())
    out.update(compile_s=comp, run_s=run)
    out["run_s_by_kind"] = {k: sum(x["flows"][k]["wall_s"] for x in runs) for k in runs[0]["flows"]}
out["end_to_end_s"] = time.perf_counter() - t0
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
try:
    out["device_peak_mb"] = jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**20
except Exception:
    pass
eos = [r for r in runs if r["eos_onset_step"] is not None]
out["n_eos"] = len(eos)
out["rod_sharpness_over_threshold"] = [
    None if r["flows"]["rod"]["sharpness_mean_eos"] is None
    else r["flows"]["rod"]["sharpness_mean_eos"] * r["lr"] / 2 for r in runs]
out["rod_rel_dist_mean_eos"] = [r["flows"]["rod"]["rel_dist_mean_eos"] for r in runs]
out["lrs"] = [r["lr"] for r in runs]
out["eos_onset_step"] = [r["eos_onset_step"] for r in runs]
out["eos_onset_rule"] = [r.get("eos_onset_rule") for r in runs]
print("RESULT " + json.dumps(out))
"""


def run_child(variant, args, env_extra=None, rho_switch=None):
    cfg = dict(variant=variant, x64=args.x64, lr_min=args.lr_min, lr_max=args.lr_max, n_lrs=args.lrs,
               steps=args.steps, rho_switch=rho_switch, eig_method=args.eig_method)
    env = dict(os.environ, **(env_extra or {}))
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    res["process_s"] = time.perf_counter() - t
    if "end_to_end_s" in res:
        print(f"{variant}: end-to-end {res['end_to_end_s']:.1f} s (compile {res['compile_s']:.1f} s, "
              f"run {res['run_s']:.1f} s), peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--lrs", type=int, default=16)
    ap.add_argument("--lr-min", type=float, default=0.04)
    ap.add_argument("--lr-max", type=float, default=0.12)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--gpu", action="store_true", help="GPU mode: sweep vs one single run")
    ap.add_argument("--batching-only", action="store_true",
                    help="only time a gradient, an HVP and a LOBPCG solve alone vs vmapped over --lrs "
                         "parameter vectors (adds `batching` to the existing results file)")
    ap.add_argument("--split", action="store_true",
                    help="only the sweep against sequential runs, each run kind's time apart, with the "
                         "default rod and with rho_switch=0 (no small-rod switch: finite differences only)")
    ap.add_argument("--eig-method", default=None,
                    help="the sharpness's eigensolver (default: the library's; e.g. krylov, at its "
                         "default 8 blocks)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep_throughput.json"))
    args = ap.parse_args(argv)
    result = {"command": "python " + " ".join(sys.argv), "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "config": vars(args) | {"out": str(args.out)}}
    if args.batching_only:
        result = json.loads(args.out.read_text()) if args.out.exists() else result
        result["batching"] = run_child("batching", args)
        result["batching"]["command"] = "python " + " ".join(sys.argv)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["batching"], indent=1))
        return
    if args.split:
        for label, rho_switch in (("default_rod", None), ("rod_rho_switch_0", 0.0)):
            sweep, seq = run_child("sweep", args, rho_switch=rho_switch), run_child("sequential", args,
                                                                                 rho_switch=rho_switch)
            result[label] = {"sweep": sweep, "sequential_compare": seq, "sweep_over_sequential_run_s": {
                k: sweep["run_s_by_kind"][k] / seq["run_s_by_kind"][k] for k in seq["run_s_by_kind"]}}
            print(label, result[label]["sweep_over_sequential_run_s"], flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
        return
    if args.gpu:
        result["single"] = run_child("single", args)
        result["sweep"] = run_child("sweep", args)
        n = args.lrs
        result["per_lr_cost_over_single_run"] = (result["sweep"]["run_s"] / n) / result["single"]["run_s"]
        result["per_lr_end_to_end_over_single"] = (result["sweep"]["end_to_end_s"] / n) / result["single"][
            "end_to_end_s"]
    else:
        result["sweep"] = run_child("sweep", args)
        result["sequential_compare"] = run_child("sequential", args)
        result["sweep_sharded_2dev"] = run_child(
            "sweep_sharded", args, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                                    "JAX_PLATFORMS": "cpu"})
        a, b, c = (result[k]["end_to_end_s"] for k in ("sweep", "sequential_compare", "sweep_sharded_2dev"))
        result["speedup_sweep_vs_sequential"] = b / a
        result["speedup_sharded_vs_sequential"] = b / c
        result["speedup_sharded_vs_sweep"] = a / c
    if args.out.exists():  # a separate `--batching-only` measurement stays in the file
        previous = json.loads(args.out.read_text())
        if "batching" in previous:
            result["batching"] = previous["batching"]
    sharp = [v for v in result["sweep"]["rod_sharpness_over_threshold"] if v is not None]
    result["rod_sharpness_within_5pct_of_2_over_lr"] = all(abs(v - 1) <= 0.05 for v in sharp)
    result["rod_sharpness_over_threshold_range"] = [min(sharp), max(sharp)] if sharp else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if "speedup" in k or "per_lr" in k or "rod_sharp" in k},
                     indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
