"""EoS tracking on every built-in real problem that needs no external data (issue 3).

    python benchmarks/eos_tracking.py [--steps 1500] [--x64] [--problems a,b] [--out FILE.json] [--resume]

For each problem: GD at the problem's documented `lr_hint`, gradient flow and Rod Flow from the
same initialisation; the run's `metrics.json` (with wall times) goes into one JSON, and a
summary figure (mean EoS tracking error of each flow per problem) is written beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

TOYS = {"quadratic", "quartic", "eos-toy"}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--problems", default=None, help="comma-separated subset (default: all real ones)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/eos_tracking.json"))
    ap.add_argument("--resume", action="store_true",
                    help="continue each problem from its checkpoint (benchmarks/results/eos_tracking/NAME/)")
    ap.add_argument("--rescore", action="store_true",
                    help="only recompute the finite-window comparison from the saved series.npz files")
    ap.add_argument("--fresh", action="store_true",
                    help="start a new results file instead of adding these problems to the existing one")
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import rodflow
    from rodflow._io import read_series, write_json
    from rodflow.problems._registry import options

    if args.rescore:
        results = json.loads(args.out.read_text())
        for name, m in results["runs"].items():
            series = args.out.parent / "eos_tracking" / name / "series.npz"
            if series.exists():
                m.update(finite_window(read_series(series), m["eos_onset_step"]))
        write_json(args.out, results)
        return
    names = [n for n in rodflow.problems.available()
             if n not in TOYS and "data_dir" not in options(n)]
    if args.problems:
        names = [n for n in args.problems.split(",") if n]
    command = "python " + " ".join(sys.argv)
    results = {"jax": jax.__version__, "device": str(jax.devices()[0]), "machine": platform.machine(),
               "runs": {}}
    if args.out.exists() and not args.fresh:
        # One problem per command on a small machine: keep the others' runs (each records the
        # command that produced it).
        results["runs"].update(json.loads(args.out.read_text()).get("runs", {}))
    for name in names:
        problem = rodflow.problems.get(name)
        t = time.perf_counter()
        r = rodflow.compare(problem, lr=problem.lr_hint, steps=args.steps, progress=True,
                            out=args.out.parent / "eos_tracking" / name, resume=args.resume)
        m = r.metrics
        m["total_s"] = time.perf_counter() - t
        m["n_params"] = problem.dim
        m["command"] = command
        results["runs"][name] = m
        f = m["flows"]
        ratio = (None if f["rod"]["rel_dist_mean_eos"] is None or not f["stable"]["rel_dist_mean_eos"]
                 else f["rod"]["rel_dist_mean_eos"] / f["stable"]["rel_dist_mean_eos"])
        m["rod_over_stable_eos"] = ratio
        m.update(finite_window(r.series, m["eos_onset_step"]))
        print(f"{name}: onset {m['eos_onset_step']}, rod/stable = {ratio}", flush=True)
        write_json(args.out, results)  # after every problem: nothing lost if interrupted

    names = list(results["runs"])
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 4))
    xs = range(len(names))
    for off, flow, color in ((-0.2, "stable", "tab:blue"), (0.2, "rod", "tab:red")):
        vals = [results["runs"][n]["flows"][flow]["rel_dist_mean_eos"] or float("nan") for n in names]
        ax.bar([x + off for x in xs], vals, width=0.4, color=color, label=flow)
    ax.set_xticks(list(xs), names, rotation=20)
    ax.set(yscale="log", ylabel="mean tracking error during EoS",
           title="GD vs flows at each problem's EoS step size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def finite_window(series, onset) -> dict:
    """When a flow becomes non-finite during EoS its metrics are `null`; compare stable and rod
    over the EoS steps where both are still finite (`[onset, first non-finite step)`)."""
    if onset is None:
        return {}
    st, rod = series["stable"], series["rod"]
    steps = np.asarray(st["step"])
    bad = ~(np.isfinite(st["rel_dist"]) & np.isfinite(rod["rel_dist"]))
    end = int(steps[bad][0]) if bad.any() else int(steps[-1]) + 1
    w = (steps >= onset) & (steps < end)
    if not w.any():
        return {}
    d_st, d_rod = float(np.mean(st["rel_dist"][w])), float(np.mean(rod["rel_dist"][w]))
    return {"finite_window": [int(onset), end - 1], "stable_rel_dist_mean_window": d_st,
            "rod_rel_dist_mean_window": d_rod, "rod_over_stable_window": d_rod / d_st}


if __name__ == "__main__":
    main()
