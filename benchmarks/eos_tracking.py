"""EoS tracking on every built-in real problem that needs no external data (issues 3, 14).

    python benchmarks/eos_tracking.py [--steps 1500] [--x64] [--problems a,b] [--seeds 0,1,2]
                                      [--out FILE.json] [--resume] [--fresh]

For each problem and initialisation seed: GD at the problem's documented `lr_hint`, gradient
flow and Rod Flow from the same initialisation. Per problem the JSON holds every seed's
`metrics.json` (`per_seed`, with wall times) and the mean and sample standard deviation of every
metric over the seeds (`spread`, see `rodflow._metrics.seed_spread`). A seed already recorded
with the same step size, steps and dtype is kept, so an interrupted command picks up where it
stopped. A summary figure (mean +- std of each flow's EoS tracking error) is written beside it.
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
    ap.add_argument("--seeds", default="0", help="comma-separated initialisation seeds (default 0)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/eos_tracking.json"))
    ap.add_argument("--resume", action="store_true",
                    help="continue each problem from its checkpoint (benchmarks/results/eos_tracking/NAME/)")
    ap.add_argument("--fresh", action="store_true",
                    help="start a new results file instead of adding these problems to the existing one")
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import rodflow
    from rodflow._io import write_json
    from rodflow.problems._registry import options

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
    seeds = [int(x) for x in args.seeds.split(",") if x]
    for name in names:
        lr = rodflow.problems.get(name).lr_hint
        entry = results["runs"].get(name, {})
        dtype = "float64" if args.x64 else "float32"
        same = (entry.get("lr"), entry.get("steps"), entry.get("dtype")) == (lr, args.steps, dtype)
        per_seed = dict(entry.get("per_seed", {})) if same else {}
        for seed in seeds:
            if str(seed) in per_seed:
                print(f"{name} seed {seed}: kept from {args.out}", flush=True)
                continue
            problem = rodflow.problems.get(name, seed=seed)
            t = time.perf_counter()
            r = rodflow.compare(problem, lr=lr, steps=args.steps, progress=True,
                                out=args.out.parent / "eos_tracking" / name / f"seed-{seed}",
                                resume=args.resume, overwrite=not args.resume)
            m = r.metrics
            m["total_s"] = time.perf_counter() - t
            m["n_params"] = problem.dim
            m["command"] = command
            f = m["flows"]
            ratio = (None if f["rod"]["rel_dist_mean_eos"] is None or not f["stable"]["rel_dist_mean_eos"]
                     else f["rod"]["rel_dist_mean_eos"] / f["stable"]["rel_dist_mean_eos"])
            m["rod_over_stable_eos"] = ratio
            m.update(finite_window(r.series, m["eos_onset_step"]))
            per_seed[str(seed)] = m
            print(f"{name} seed {seed}: onset {m['eos_onset_step']} ({m['eos_onset_rule']}), "
                  f"rod/stable = {ratio}", flush=True)
            results["runs"][name] = _entry(name, lr, args.steps, dtype, per_seed)
            write_json(args.out, results)  # after every seed: nothing lost if interrupted

    names = list(results["runs"])
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 4))
    xs = range(len(names))
    for off, flow, color in ((-0.2, "stable", "tab:blue"), (0.2, "rod", "tab:red")):
        st = [results["runs"][n]["spread"][flow]["rel_dist_mean_eos"] for n in names]
        vals = [s["mean"] if s["mean"] is not None else float("nan") for s in st]
        ax.bar([x + off for x in xs], vals, width=0.4, color=color, label=flow,
               yerr=[s["std"] or 0.0 for s in st], capsize=3)
    ax.set_xticks(list(xs), names, rotation=20)
    positive = any(b.get_height() > 0 for b in ax.patches)
    ax.set(yscale="log" if positive else "linear",
           ylabel="mean tracking error during EoS (mean +- std over seeds)",
           title="GD vs flows at each problem's EoS step size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def _entry(name, lr, steps, dtype, per_seed) -> dict:
    """One problem's record: every seed's metrics and their spread over seeds."""
    from rodflow._metrics import seed_spread

    seeds = sorted(per_seed, key=int)
    runs = [per_seed[s] for s in seeds]
    spread = seed_spread([r["flows"] for r in runs])
    spread["run"] = seed_spread([{"run": {k: r.get(k) for k in (
        "eos_onset_step", "sharpness_initial", "rod_over_stable_eos", "rod_over_stable_window")}}
        for r in runs])["run"]
    return {"problem": name, "lr": lr, "steps": steps, "dtype": dtype, "seeds": [int(s) for s in seeds],
            "commands": sorted({r["command"] for r in runs}), "n_params": runs[0]["n_params"],
            "spread": spread, "per_seed": per_seed}


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
