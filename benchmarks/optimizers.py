"""Optimisers with state (issue 6): the discrete optimiser vs its stable flow vs Rod Flow on z.

    python benchmarks/optimizers.py [--problem mlp-digits] [--steps 1000] [--only adam,nadam]
        [--out benchmarks/results/optimizers.json]
    python benchmarks/optimizers.py --problem mlp-teacher --search   # pick each optimiser's lr

`mlp-digits` (float64, the default network), one step size per optimiser at which it reaches its
edge of stability (the effective sharpness reaches `threshold(lr)`; step sizes found by short
discrete runs, see the `search` notes in the JSON). Flows: `stable` (`dz/dt = delta(z)`),
`rod` (Rod Flow on the joint state z), for optimisers with a second moment `rod_smooth_nu`
(nu smooth, driven by the rod's ends) and `rod_nu_centre` (nu driven at the centre), and for
heavy ball, Adam and scalar Adam the second-order pair `stable_momentum` / `rod_momentum`. Other
problems (`--problem`) go into the same JSON under keys `problem:optimizer`. A run named
`NAME@OPTION=VALUE,...` (e.g. `adam@beta1=0.5`) uses those options instead of the optimiser's
defaults. `--warm` starts the flows after the momentum transient (`start_step =
rodflow.transient_steps(optimizer)`: 88 steps for momentum 0.9, 14 for 0.5) and stores the runs
as `NAME+warm`.
Acceptance asked by the issue: `rel_dist_mean_eos(rod) <= 0.5 * rel_dist_mean_eos(stable)`; the
JSON reports each rod's ratio to the plain `stable` flow and to the best stable flow of the run.
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
from rodflow import (  # noqa: E402
    CentralFlow,
    MomentumRodFlow,
    MomentumStableFlow,
    RodFlow,
    StableFlow,
    make_map,  # noqa: E402
)
from rodflow._io import write_json  # noqa: E402

# problem -> optimiser -> step size at its edge of stability (default options of each map)
RUNS = {"mlp-digits": {
    "gd": 0.07,
    "heavy-ball": 0.1,
    "nesterov": 0.04,
    "rmsprop": 1e-4,
    "adam": 3e-3,
    "nadam": 1e-3,
    "scalar-rmsprop": 3e-4,
    "scalar-adam": 3e-3,
    # momentum 0.5 instead of the default 0.9 (`NAME@OPTION=VALUE`): step sizes from
    # /tmp discrete-only runs (1000 steps), see the `momentum_0.5` note in the JSON
    "heavy-ball@beta=0.5": 0.1,
    "adam@beta1=0.5": 5e-4,
}, "mlp-teacher": {
    # from `--problem mlp-teacher --search` (1000 steps, float64); heavy ball (beta 0.9) has no
    # step size with a stable EoS here: 0.53 never reaches it, 0.54 reaches it at step 40 and
    # diverges at step 223 (0.55-1.0 diverge too).
    "gd": 0.35,
    "nesterov": 0.25,
    "rmsprop": 3e-4,
    "adam": 0.05,
    "nadam": 3e-3,
    "scalar-rmsprop": 3e-4,
    "scalar-adam": 1e-2,
    # momentum 0.5 (1000-step discrete-only runs, see the `momentum_0.5` note in the JSON)
    "heavy-ball@beta=0.5": 0.55,
    "nesterov@beta=0.5": 0.25,
    "adam@beta1=0.5": 3e-3,
    "nadam@beta1=0.5": 1e-3,
    "scalar-adam@beta1=0.5": 3e-3,
}}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="mlp-digits")
    ap.add_argument("--search", action="store_true",
                    help="discrete-only sweeps over a step-size grid per optimiser; print the onsets")
    ap.add_argument("--grid", action="append", default=[], help="with --search: NAME=lr1,lr2,...")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--sharpness-every", type=int, default=20)
    ap.add_argument("--only", default=None, help="comma-separated optimiser names")
    ap.add_argument("--lr", action="append", default=[],
                    help="override NAME=LR; NAME@OPTION=VALUE,... runs the optimiser with those options")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/optimizers.json"))
    ap.add_argument("--fresh", action="store_true",
                    help="start a new results file instead of adding these runs to the existing one")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure and table from --out")
    ap.add_argument("--central", action="store_true",
                    help="also run Central Flow (`central`) for the optimisers it models (GD, RMSProp, "
                         "scalar RMSProp)")
    ap.add_argument("--warm", action="store_true",
                    help="warm start: flows start after the momentum transient (rodflow.transient_steps); "
                         "runs are stored as NAME+warm")
    args = ap.parse_args(argv)
    if args.plot_only:
        results = json.loads(args.out.read_text())
        plot(results, args.out.with_suffix(".png"))
        print(summary(results))
        print()
        print(onset_table(results))
        print()
        print(acceptance_table(results))
        print()
        print(central_table(results))
        return
    if args.search:
        search(args)
        return
    runs = dict(RUNS.get(args.problem, {}))
    for item in args.lr:
        k, _, v = item.rpartition("=")
        runs[k] = float(v)
    names = args.only.split(",") if args.only else list(runs)
    prev = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.fresh:  # the notes (step-size searches) stay; the runs start anew
        prev["runs"] = {}
    command = "python " + " ".join(sys.argv)
    results = {
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "machine": platform.machine(),
        "dtype": "float64",
        "runs": prev.get("runs", {}),
        "notes": prev.get("notes", {}),
    }
    problem = rodflow.problems.get(args.problem)
    for name in names:
        lr = runs[name]
        opt_name, options = _parse_run(name)
        opt = make_map(opt_name, **options)
        start_step = rodflow.transient_steps(opt) if args.warm else 0
        flows = {"stable": StableFlow(), "rod": RodFlow()}
        if opt.split(problem, opt.init_state(problem, problem.x0, lr)).nu.size:  # has second moments
            flows["rod_smooth_nu"] = RodFlow(smooth_nu=True)
            flows["rod_nu_centre"] = RodFlow(smooth_nu=True, nu_at="centre")
        if opt.momentum() > 0 and MomentumStableFlow().unsupported(opt) is None:
            flows["stable_momentum"] = MomentumStableFlow()
            flows["rod_momentum"] = MomentumRodFlow()
        if args.central and CentralFlow().unsupported(opt) is None:
            flows["central"] = CentralFlow()
        t0 = time.perf_counter()
        r = rodflow.compare(
            problem,
            lr=lr,
            steps=args.steps,
            optimizer=opt,
            flows=flows,
            sharpness_every=args.sharpness_every,
            start_step=start_step,
            figure=False,
        )
        total = time.perf_counter() - t0
        m = r.metrics
        fl = m["flows"]
        d_stable = fl["stable"]["rel_dist_mean_eos"]
        stables = [fl[f]["rel_dist_mean_eos"] for f in flows if f.startswith("stable")]
        d_best = min((d for d in stables if d is not None), default=None)
        entry = {
            "command": command,
            "problem": args.problem,
            "steps": args.steps,
            "lr": lr,
            "optimizer": opt_name,
            "options": m["optimizer_options"],
            "threshold": m["threshold"],
            "eos_onset_step": m["eos_onset_step"],
            "eos_onset_rule": m["eos_onset_rule"],
            "sharpness_initial": m["sharpness_initial"],
            "start_step": start_step,
            "total_s": total,
            "discrete_sharpness_mean_eos": fl["discrete"]["sharpness_mean_eos"],
            "flows": {},
        }
        for f in ["discrete", *flows]:
            keep = (
                "rel_dist_mean_eos",
                "rel_dist_max_eos",
                "rel_dist_mean",
                "loss_err_eos",
                "loss_err_smooth_eos",
                "catapult_lag_steps",
                "catapult_corr",
                "catapult_amplitude",
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
                entry["flows"][f]["ratio_to_best_stable"] = None if d is None or not d_best else d / d_best
                entry["flows"][f]["accept"] = bool(d is not None and d_best and d <= 0.5 * d_best)
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
        key = name if args.problem == "mlp-digits" else f"{args.problem}:{name}"
        key += "+warm" if args.warm else ""
        results["runs"][key] = entry
        print(f"== {name} lr={lr:g} ({total:.0f} s)\n{r.table()}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, results)
    plot(results, args.out.with_suffix(".png"))
    print(summary(results))


def _parse_run(key):
    """`"adam@beta1=0.5,beta2=0.99"` -> `("adam", {"beta1": 0.5, "beta2": 0.99})`."""
    name, _, opts = key.partition("@")
    return name, {k: float(v) for k, v in (o.split("=") for o in opts.split(",") if o)}


SEARCH_GRID = {
    "gd": [0.02, 0.05, 0.1, 0.2, 0.4, 0.8],
    "heavy-ball": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2],
    "nesterov": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2],
    "rmsprop": [1e-4, 3e-4, 1e-3, 3e-3],
    "adam": [3e-4, 1e-3, 3e-3, 1e-2],
    "nadam": [3e-4, 1e-3, 3e-3, 1e-2],
    "scalar-rmsprop": [1e-4, 3e-4, 1e-3, 3e-3],
    "scalar-adam": [3e-4, 1e-3, 3e-3, 1e-2],
}


def search(args):
    """Discrete-only sweeps (one compiled program per optimiser) over `SEARCH_GRID`: the EoS onset,
    the peak effective sharpness over the threshold and divergence of each step size."""
    problem = rodflow.problems.get(args.problem)
    grid = dict(SEARCH_GRID)
    for item in args.grid:
        k, _, v = item.rpartition("=")
        grid[k] = [float(x) for x in v.split(",")]
    names = args.only.split(",") if args.only else list(grid)
    for name in names:
        opt_name, options = _parse_run(name)
        res = rodflow.sweep(problem, lrs=grid[name], steps=args.steps, flows=("discrete",),
                            optimizer=make_map(opt_name, **options), sharpness_every=args.sharpness_every,
                            figure=False)
        for run in res.metrics["runs"]:
            d = run["flows"]["discrete"]
            print(f"{args.problem} {name:<15} lr {run['lr']:<8g} onset {str(run['eos_onset_step']):>5}  "
                  f"sharpness/threshold mean EoS {_fmt(d.get('sharpness_mean_eos'), d.get('threshold'))}  "
                  f"diverged {d.get('diverged_at')}", flush=True)


def _fmt(s, thr):
    return "-" if s is None or not thr else f"{s / thr:.3f}"


ROD_FLOWS = ("rod", "rod_smooth_nu", "rod_nu_centre", "rod_momentum")
STABLE_FLOWS = ("stable", "stable_momentum")


def _best(fl, group):
    """`(rel_dist_mean_eos, name)` of the flow of `group` that tracks best in the run's flows `fl`
    (`(None, None)` if none has a value)."""
    vals = [(fl[f]["rel_dist_mean_eos"], f) for f in group
            if fl.get(f, {}).get("rel_dist_mean_eos") is not None]
    return min(vals) if vals else (None, None)


def summary(results) -> str:
    """A Markdown table: mean EoS tracking error of every flow, and the best rod over the best
    stable flow of the same run (the acceptance ratio, at most 0.5 to pass)."""
    cols = STABLE_FLOWS + ROD_FLOWS
    lines = ["| run | lr | onset | start | " + " | ".join(cols)
             + " | best rod / best stable | t_disc | t_rod |",
             "|---" * (len(cols) + 7) + "|"]
    for name, e in results["runs"].items():
        fl = e["flows"]

        def d(f):
            return fl.get(f, {}).get("rel_dist_mean_eos")

        def fmt(v):
            return "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

        diverged = [f for f in ROD_FLOWS if fl.get(f, {}).get("diverged_at") is not None]
        ratio = _ratio(e)
        cells = [fmt(d(f)) if f not in diverged else f"diverged at {fl[f]['diverged_at']}" for f in cols]
        walls = f"{fmt(fl['discrete'].get('wall_s'))} | {fmt(fl['rod'].get('wall_s'))}"
        lines.append(f"| {name} | {e['lr']:g} | {e['eos_onset_step']} | {e.get('start_step', 0)} | "
                     + " | ".join(cells)
                     + f" | {fmt(ratio)} | {walls} |")
    return "\n".join(lines)


def _ratio(e):
    """Best rod over best stable flow of a run (`None` if either is missing)."""
    (ds, _), (dr, _) = _best(e["flows"], STABLE_FLOWS), _best(e["flows"], ROD_FLOWS)
    return None if ds is None or dr is None else dr / ds


def acceptance_table(results) -> str:
    """Per run, the acceptance ratio (best rod / best stable) with every flow started at step 0
    and with the warm start (`NAME+warm`; the same run when the optimiser has no momentum)."""
    runs = results["runs"]
    lines = ["| run | onset | from step 0 | warm start K | warm start | pass (<= 0.5) |", "|---" * 6 + "|"]
    for name, e in runs.items():
        if name.endswith("+warm"):
            continue
        warm = runs.get(name + "+warm")
        if warm is None and rodflow.transient_steps(make_map(e["optimizer"], **_float_options(e))) == 0:
            warm = e
        cold_r, warm_r = _ratio(e), None if warm is None else _ratio(warm)
        best = warm_r if warm_r is not None else cold_r
        lines.append(f"| {name} | {e['eos_onset_step']} | {_f(cold_r)} | "
                     f"{'-' if warm is None else warm.get('start_step', 0)} | {_f(warm_r)} | "
                     f"{'-' if best is None else ('yes' if best <= 0.5 else 'no')} |")
    return "\n".join(lines)


def central_table(results) -> str:
    """Runs with Central Flow (`--central`): the stable flow, Central Flow and the best rod, side
    by side on the same run (issue 17: central below stable, best rod at most 1.1x central)."""
    lines = ["| run | lr | onset | stable | central | best rod | rod / central | central < stable | "
             "rod <= 1.1 central | t_central / t_rod |", "|---" * 10 + "|"]
    for name, e in results["runs"].items():
        fl = e["flows"]
        if "central" not in fl:
            continue
        ds, dc = fl["stable"]["rel_dist_mean_eos"], fl["central"]["rel_dist_mean_eos"]
        dr, rod = _best(fl, ROD_FLOWS)
        ratio = None if dr is None or not dc else dr / dc
        walls = (fl["central"].get("wall_s"), fl[rod].get("wall_s") if rod else None)
        speed = None if None in walls or not walls[1] else walls[0] / walls[1]
        lines.append(f"| {name} | {e['lr']:g} | {e['eos_onset_step']} | {_g3(ds)} | {_g3(dc)} | "
                     f"{_g3(dr)} ({rod}) | {_g3(ratio)} | "
                     f"{'-' if None in (ds, dc) else ('yes' if dc < ds else 'no')} | "
                     f"{'-' if ratio is None else ('yes' if ratio <= 1.1 else 'no')} | {_g3(speed)} |")
    return "\n".join(lines)


def _g3(v):
    return "-" if v is None else f"{v:.3g}"


def _float_options(e):
    return {k: v for k, v in e["options"].items() if isinstance(v, float)}


def _f(v):
    return "-" if v is None else f"{v:.3f}"


def _at(series, step):
    """The series value at the recorded step nearest `step` (`None` if not finite)."""
    steps = np.asarray(series["step"])
    v = series["rel_dist"][int(np.argmin(np.abs(steps - step)))]
    return None if v is None or not np.isfinite(v) else float(v)


def onset_table(results) -> str:
    """Where the error is made: each run's best stable and best rod flow (by `rel_dist_mean_eos`)
    with their error at the EoS onset, and how much the EoS phase adds on average (mean over EoS
    minus the value at onset). A flow already off at onset carries that error through EoS, and no
    model of the oscillation can remove it."""
    lines = ["| run | onset | best stable | d at onset | EoS adds | best rod | d at onset | EoS adds | "
             "rod / stable (EoS adds) |", "|---" * 9 + "|"]
    for name, e in results["runs"].items():
        fl, on = e["flows"], e["eos_onset_step"]
        if on is None or on == 0:
            continue  # no pre-EoS phase to separate

        row, adds = [], []
        for group in (STABLE_FLOWS, ROD_FLOWS):
            mean, f = _best(fl, group)
            d0 = _at(e["series"][f], on + 1) if f in e["series"] else None
            add = None if d0 is None else mean - d0
            adds.append(add)
            row += [f or "-", "-" if d0 is None else f"{d0:.3g}", "-" if add is None else f"{add:.3g}"]
        ratio = "-" if None in adds or adds[0] <= 0 else f"{adds[1] / adds[0]:.2f}"
        lines.append(f"| {name} | {on} | " + " | ".join(row) + f" | {ratio} |")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    names = list(runs)
    fig, axes = plt.subplots(1, 3, figsize=(19, 5.2))
    best = {n: (_best(runs[n]["flows"], STABLE_FLOWS), _best(runs[n]["flows"], ROD_FLOWS)) for n in names}
    w = 0.4
    for i, (label, color) in enumerate((("best stable flow", "tab:blue"), ("best rod flow", "tab:red"))):
        ys = [best[n][i][0] for n in names]
        axes[0].bar([j + (i - 0.5) * w for j in range(len(names))], [np.nan if y is None else y for y in ys],
                    w, color=color, label=label)
    for j, n in enumerate(names):
        (ds, _), (dr, _) = best[n]
        if ds and dr:
            axes[0].text(j, max(ds, dr) * 1.15, f"{dr / ds:.2f}", ha="center", fontsize=6,
                         color="black" if dr <= 0.5 * ds else "tab:red")
    axes[0].set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
    axes[0].set(yscale="log", title="rel_dist_mean_eos; best rod / best stable above (red: > 0.5)")
    axes[0].legend(fontsize=8)
    cmap = plt.get_cmap("tab20")
    for j, n in enumerate(names):
        color, ls = cmap(j % 20), "-" if j < 20 else "--"
        s = runs[n]["series"]
        axes[1].plot(s["discrete"]["sharpness_step"], s["discrete"]["sharpness_over_threshold"],
                     color=color, ls=ls, lw=1, label=n)
        for k, lw in ((0, 0.6), (1, 1.2)):  # best stable thin, best rod thick
            f = best[n][k][1]
            if f is None:
                continue
            y = np.array([np.nan if v is None else v for v in s[f]["rel_dist"]])
            axes[2].plot(s[f]["step"], y, color=color, ls=ls, lw=lw, label=n if k else None)
    axes[1].axhline(1.0, color="gray", ls=":")
    axes[1].set(xlabel="step", ylabel="effective sharpness / threshold", ylim=(0, 2),
                title="discrete run: sharpness / threshold (clipped at 2)")
    axes[2].set(xlabel="step", yscale="log", ylim=(1e-4, 10),
                title="tracking error d(t): best rod thick, best stable thin")
    axes[2].legend(fontsize=6, ncol=2, loc="lower right")
    fig.suptitle("optimisers with state, float64 (mlp-digits; mlp-teacher as 'mlp-teacher:NAME'; "
                 "NAME@beta=0.5: momentum 0.5)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
