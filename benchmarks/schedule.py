"""Learning-rate schedules (issue 17, part 2): GD and its flows under a linear warm-up.

    python benchmarks/schedule.py [--steps 1500] [--flows discrete,stable,rod,central]
                                  [--out benchmarks/results/schedule.json]

mlp-digits in float64, `optax.linear_schedule(0.01, 0.07, 500)` (a linear warm-up of lr from
0.01 to 0.07 over 500 steps, then constant), 1500 steps, every flow from the same start. GD's
threshold moves with the step size, `2/lr(t)`; the JSON records

- whether GD's sharpness follows it once at EoS: over the measured EoS steps, the ratio
  `S_k / (2/lr(k))` (median, and the median of `|S_k / (2/lr(k)) - 1|`), during the warm-up
  (`onset <= k < 500`, the threshold falling), after it (`k >= 500`, constant), and from the
  first measured step after the warm-up at which GD is back within 5% of `2/lr(k)` (its
  sharpness can stay above a threshold that has just fallen until a catapult);
- each flow's tracking error `rel_dist_mean_eos` (and the rest of its metrics), and Rod Flow's
  over gradient flow's (the acceptance asks for at most 1/2);
- the command, the commit, the machine's load average before and after (`machine_loaded`: the
  1-minute load average above 0.5 before the run or above 1.5 after it), and the timings.

A figure beside the JSON (`schedule.png`): GD's and the flows' sharpness against the moving
threshold, and the flows' tracking error. Nothing is tuned to this run: every flow runs with its
defaults.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

WARMUP = (0.01, 0.07, 500)


def _git(*args) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()


def threshold_tracking(steps, sharpness, threshold, lo, hi) -> dict:
    """`S_k / threshold_k` over the measured steps `lo <= k < hi` (finite ones)."""
    steps, s = np.asarray(steps), np.asarray(sharpness, float)
    sel = (steps >= lo) & (steps < hi) & np.isfinite(s)
    if not sel.any():
        return {"window": [int(lo), int(hi) - 1], "n": 0}
    ratio = s[sel] / np.asarray(threshold, float)[steps[sel]]
    return {"window": [int(lo), int(hi) - 1], "n": int(sel.sum()),
            "median_ratio": float(np.median(ratio)), "median_abs_dev": float(np.median(np.abs(ratio - 1))),
            "max_abs_dev": float(np.max(np.abs(ratio - 1))),
            "fraction_within_10pct": float(np.mean(np.abs(ratio - 1) <= 0.1))}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--flows", default="discrete,stable,rod,central")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/schedule.json"))
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optax

    import rodflow
    from rodflow._io import write_json

    load_before = os.getloadavg()
    problem = rodflow.problems.get("mlp-digits")
    schedule = optax.linear_schedule(*WARMUP)
    flows = [f for f in args.flows.split(",") if f]
    t0 = time.perf_counter()
    r = rodflow.compare(problem, lr=schedule, flows=flows, steps=args.steps, progress=True,
                        out=args.out.parent / "schedule", overwrite=True)
    total = time.perf_counter() - t0
    load_after = os.getloadavg()
    m, d = r.metrics, r.series["discrete"]
    onset = m["eos_onset_step"]
    warm_end = WARMUP[2]
    end = args.steps + 1
    gd = {
        "eos_onset_step": onset, "eos_onset_rule": m["eos_onset_rule"],
        "during_warmup": None if onset is None else threshold_tracking(
            d["sharpness_step"], d["sharpness"], d["threshold"], onset, warm_end),
        "after_warmup": None if onset is None else threshold_tracking(
            d["sharpness_step"], d["sharpness"], d["threshold"], max(onset, warm_end), end),
    }
    # GD's sharpness can stay above a threshold that has just fallen until its oscillation has
    # grown (from rounding noise) into a catapult: the first measured step after the warm-up at
    # which it is back within 5% of 2/lr(k), and the ratio from there on
    ratio_k = np.asarray(d["sharpness"]) / np.asarray(d["threshold"])[np.asarray(d["sharpness_step"])]
    back = np.flatnonzero((np.asarray(d["sharpness_step"]) >= warm_end) & (np.abs(ratio_k - 1) <= 0.05))
    gd["back_at_threshold_step"] = (None if onset is None or not back.size
                                    else int(d["sharpness_step"][back[0]]))
    gd["from_back_at_threshold"] = (None if gd["back_at_threshold_step"] is None else threshold_tracking(
        d["sharpness_step"], d["sharpness"], d["threshold"], gd["back_at_threshold_step"], end))
    after = gd["after_warmup"] or {}
    gd["follows_threshold_after_warmup"] = (after.get("n", 0) > 0 and after["median_abs_dev"] <= 0.1)
    per_flow = {}
    for name, fm in m["flows"].items():
        entry = {k: fm.get(k) for k in ("rel_dist_mean_eos", "rel_dist_max_eos", "rel_dist_mean",
                                        "loss_err_eos", "loss_err_smooth_eos", "sharpness_mean_eos",
                                        "final_loss", "wall_s", "compile_s", "grad_evals", "diverged_at",
                                        "solver_stopped_at")}
        s = r.series[name]
        if onset is not None:
            entry["sharpness_over_threshold_after_warmup"] = threshold_tracking(
                s["sharpness_step"], s["sharpness"], d["threshold"], max(onset, warm_end), end)
        per_flow[name] = entry
    rod, stable = (m["flows"].get(k, {}).get("rel_dist_mean_eos") for k in ("rod", "stable"))
    ratio = None if rod is None or not stable else rod / stable
    # loaded: the 1-minute load average above 0.5 before the run, or above 1.5 after it (this run
    # alone brings it to about 1 on an idle machine)
    busy = load_before[0] > 0.5 or load_after[0] > 1.5
    result = {
        "problem": "mlp-digits", "n_params": problem.dim, "dtype": m["dtype"], "steps": args.steps,
        "schedule": {"name": "optax.linear_schedule", "init_value": WARMUP[0], "end_value": WARMUP[1],
                     "transition_steps": WARMUP[2]},
        "flows": flows,
        "gd_threshold_tracking": gd,
        "per_flow": per_flow,
        "rod_over_stable_eos": ratio,
        "acceptance": {"rod_at_most_half_of_stable": None if ratio is None else ratio <= 0.5,
                       "gd_follows_2_over_lr_after_warmup": gd["follows_threshold_after_warmup"]},
        "command": "python " + " ".join(sys.argv),
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "jax": jax.__version__, "device": str(jax.devices()[0]), "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_avg_before": list(load_before), "load_avg_after": list(load_after),
        "machine_loaded": busy, "total_s": total,
        "metrics": m,
    }
    write_json(args.out, result)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    colors = {"discrete": "black", "stable": "tab:blue", "rod": "tab:red", "central": "tab:orange"}
    for name, s in r.series.items():
        axes[0].plot(s["sharpness_step"], s["sharpness"], color=colors.get(name),
                     lw=1.0 if name == "discrete" else 1.5, ls="-" if name == "discrete" else "--",
                     label="GD" if name == "discrete" else name)
        if name != "discrete":
            axes[1].plot(s["step"][1:], s["rel_dist"][1:], color=colors.get(name), lw=1.4, label=name)
    axes[0].plot(d["step"], d["threshold"], color="gray", ls=":", lw=1.5, label="2 / lr(t)")
    top = 1.3 * max(2.0 / WARMUP[1], np.nanmax(d["sharpness"]))
    axes[0].set(xlabel="step", ylabel="sharpness", ylim=(0, top),
                title="sharpness against the moving threshold 2/lr(t)")
    axes[1].set(xlabel="step", yscale="log", title="tracking error |c(t) - m_t| / |m_t - m_0|")
    for ax in axes:
        ax.axvline(warm_end, color="gray", lw=0.8, alpha=0.5)
        if onset is not None:
            ax.axvline(onset, color="gray", lw=0.8, ls="--", alpha=0.5)
        ax.legend(fontsize=8)
    fig.suptitle(f"mlp-digits (float64), lr warm-up {WARMUP[0]} -> {WARMUP[1]} over {WARMUP[2]} steps, "
                 f"then constant; EoS from step {onset}")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(r.table())
    print(f"GD S/(2/lr): during warm-up {gd['during_warmup']}, after {gd['after_warmup']}; "
          f"rod/stable = {ratio}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
