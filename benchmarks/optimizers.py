"""Optimisers with state (issue 6): the discrete optimiser vs its stable flow vs Rod Flow on z.

    python benchmarks/optimizers.py [--steps 1000] [--only adam,nadam]
        [--out benchmarks/results/optimizers.json]

`mlp-digits` (float64, the default network), one step size per optimiser at which it reaches its
edge of stability (the effective sharpness reaches `threshold(lr)`; step sizes found by short
discrete runs, see the `search` notes in the JSON). Flows: `stable` (`dz/dt = delta(z)`),
`rod` (Rod Flow on the joint state z), and for optimisers with a second moment `rod_smooth_nu`
(nu smooth, driven by the rod's ends) and `rod_nu_centre` (nu driven at the centre).
Acceptance asked by the issue: `rel_dist_mean_eos(rod) <= 0.5 * rel_dist_mean_eos(stable)`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import rodflow  # noqa: E402
from rodflow import RodFlow, StableFlow  # noqa: E402
from rodflow._io import write_json  # noqa: E402
from rodflow._maps import make_map  # noqa: E402

# optimiser -> step size at its edge of stability on mlp-digits (default options of each map)
RUNS = {
    "gd": 0.07,
    "heavy-ball": 0.1,
    "nesterov": 0.04,
    "rmsprop": 1e-4,
    "adam": 3e-3,
    "nadam": 1e-3,
    "scalar-rmsprop": 3e-4,
    "scalar-adam": 3e-3,
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--sharpness-every", type=int, default=20)
    ap.add_argument("--only", default=None, help="comma-separated optimiser names")
    ap.add_argument("--lr", action="append", default=[], help="override NAME=LR")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/optimizers.json"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure and table from --out")
    args = ap.parse_args(argv)
    if args.plot_only:
        results = json.loads(args.out.read_text())
        plot(results, args.out.with_suffix(".png"))
        print(summary(results))
        return
    runs = dict(RUNS)
    for item in args.lr:
        k, v = item.split("=")
        runs[k] = float(v)
    names = args.only.split(",") if args.only else list(runs)
    prev = json.loads(args.out.read_text()) if args.out.exists() else {}
    results = {
        "command": "python " + " ".join(sys.argv),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "machine": platform.machine(),
        "steps": args.steps,
        "problem": "mlp-digits",
        "dtype": "float64",
        "runs": prev.get("runs", {}),
    }
    problem = rodflow.problems.get("mlp-digits")
    for name in names:
        lr = runs[name]
        opt = make_map(name)
        flows = {"stable": StableFlow(), "rod": RodFlow()}
        if opt.n_smooth(problem):
            flows["rod_smooth_nu"] = RodFlow(smooth_nu=True)
            flows["rod_nu_centre"] = RodFlow(smooth_nu=True, nu_at="centre")
        t0 = time.perf_counter()
        r = rodflow.compare(
            problem,
            lr=lr,
            steps=args.steps,
            optimizer=opt,
            flows=flows,
            sharpness_every=args.sharpness_every,
            figure=False,
        )
        total = time.perf_counter() - t0
        m = r.metrics
        fl = m["flows"]
        d_stable = fl["stable"]["rel_dist_mean_eos"]
        entry = {
            "lr": lr,
            "optimizer": name,
            "options": m["optimizer_options"],
            "threshold": m["threshold"],
            "eos_onset_step": m["eos_onset_step"],
            "total_s": total,
            "discrete_sharpness_mean_eos": fl["discrete"]["sharpness_mean_eos"],
            "flows": {},
        }
        for f in ["discrete", *flows]:
            keep = (
                "rel_dist_mean_eos",
                "rel_dist_max_eos",
                "rel_dist_mean",
                "loss_rel_err_mean_eos",
                "sharpness_mean_eos",
                "final_loss",
                "wall_s",
                "compile_s",
                "grad_evals",
                "diverged_at",
            )
            entry["flows"][f] = {k: fl[f].get(k) for k in keep if k in fl[f]}
            if f.startswith("rod"):
                d = fl[f]["rel_dist_mean_eos"]
                entry["flows"][f]["ratio_to_stable"] = None if d is None or not d_stable else d / d_stable
                entry["flows"][f]["accept"] = bool(d is not None and d_stable and d <= 0.5 * d_stable)
        entry["series"] = {
            f: {
                "step": r.series[f]["step"][1:].tolist()[::5],
                "rel_dist": [
                    None if not np.isfinite(v) else float(v) for v in r.series[f]["rel_dist"][1:][::5]
                ],
            }
            for f in flows
        }
        d = r.series["discrete"]
        entry["series"]["discrete"] = {
            "sharpness_step": d["sharpness_step"].tolist(),
            "sharpness_over_threshold": (d["sharpness"] / m["threshold"]).tolist(),
        }
        results["runs"][name] = entry
        print(f"== {name} lr={lr:g} ({total:.0f} s)\n{r.table()}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, results)
    plot(results, args.out.with_suffix(".png"))
    print(summary(results))


def summary(results) -> str:
    lines = [
        f"{'optimizer':<15}{'lr':>9}{'onset':>7}{'stable':>10}{'rod':>10}{'rod/st':>8}"
        f"{'smooth-nu':>11}{'/st':>7}{'nu@centre':>11}{'/st':>7}{'t_disc':>8}{'t_stab':>8}{'t_rod':>8}"
    ]
    for name, e in results["runs"].items():
        fl = e["flows"]

        def g(f, k):
            v = fl.get(f, {}).get(k)
            return "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

        lines.append(
            f"{name:<15}{e['lr']:>9g}{str(e['eos_onset_step']):>7}{g('stable', 'rel_dist_mean_eos'):>10}"
            f"{g('rod', 'rel_dist_mean_eos'):>10}{g('rod', 'ratio_to_stable'):>8}"
            f"{g('rod_smooth_nu', 'rel_dist_mean_eos'):>11}{g('rod_smooth_nu', 'ratio_to_stable'):>8}"
            f"{g('rod_nu_centre', 'rel_dist_mean_eos'):>11}{g('rod_nu_centre', 'ratio_to_stable'):>8}"
            f"{g('discrete', 'wall_s'):>8}{g('stable', 'wall_s'):>8}{g('rod', 'wall_s'):>8}"
        )
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    names = list(runs)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    flows = ["stable", "rod", "rod_smooth_nu", "rod_nu_centre"]
    colors = {
        "stable": "tab:blue",
        "rod": "tab:red",
        "rod_smooth_nu": "tab:green",
        "rod_nu_centre": "tab:purple",
    }
    w = 0.2
    for i, f in enumerate(flows):
        ys = [runs[n]["flows"].get(f, {}).get("rel_dist_mean_eos") for n in names]
        xs = [j + (i - 1.5) * w for j in range(len(names))]
        axes[0].bar(xs, [np.nan if y is None else y for y in ys], w, color=colors[f], label=f)
    axes[0].set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axes[0].set(yscale="log", title="mean tracking error during EoS (rel_dist_mean_eos)")
    axes[0].legend(fontsize=8)
    cmap = plt.get_cmap("tab10")
    for j, n in enumerate(names):
        s = runs[n]["series"]
        axes[1].plot(
            s["discrete"]["sharpness_step"],
            s["discrete"]["sharpness_over_threshold"],
            color=cmap(j),
            lw=1,
            label=n,
        )
        for f, ls in (("stable", ":"), ("rod", "-")):
            y = np.array([np.nan if v is None else v for v in s[f]["rel_dist"]])
            axes[2].plot(s[f]["step"], y, color=cmap(j), ls=ls, lw=1, label=n if f == "rod" else None)
    axes[1].axhline(1.0, color="gray", ls=":")
    axes[1].set(
        xlabel="step", ylabel="effective sharpness / threshold", title="discrete run: sharpness / threshold"
    )
    axes[1].legend(fontsize=7)
    axes[2].set(
        xlabel="step", yscale="log", ylim=(1e-4, 10), title="tracking error d(t): rod solid, stable dotted"
    )
    axes[2].legend(fontsize=7)
    fig.suptitle(f"mlp-digits float64, {results['steps']} steps: optimisers with state")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
