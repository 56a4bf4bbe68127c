"""Cost and accuracy of every flow on the same runs (issue 4).

    python benchmarks/flows_cost_accuracy.py [--problems eos-toy,mlp-digits] [--steps N] [--repeats 3]
                                             [--seeds 0,1,2] [--x64]

For each problem (at its documented EoS step size `lr_hint`) and initialisation seed, GD,
gradient flow, Central Flow, Rod Flow (default) and Rod Flow (Taylor variant) run from the same
initialisation. Per flow and seed: wall time per unit of flow time (median over `--repeats`
runs, compiled programs reused, so compilation is excluded), gradient evaluations and
Hessian-vector products per unit time (from the solver's step count and each flow's
`cost_per_rhs`, an HVP counted as 2 gradients in `grad_evals`), and the tracking and loss
metrics; per problem, the mean and sample standard deviation of each over the seeds (`spread`).
Writes `benchmarks/results/flows_cost_accuracy.json` after every seed (a seed already recorded
with the same steps and dtype is kept) and a figure beside it. Toy problems have no random
initialisation: their seeds are all the same run, so give them one seed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

DEFAULT_STEPS = {"eos-toy": 1000, "mlp-digits": 1500, "cnn-digits": 600, "transformer-sort": 400}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", default="eos-toy,mlp-digits,cnn-digits,transformer-sort")
    ap.add_argument("--steps", type=int, default=None, help="override every problem's step count")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--seeds", default="0", help="comma-separated initialisation seeds (default 0)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/flows_cost_accuracy.json"))
    ap.add_argument("--fresh", action="store_true",
                    help="start a new results file instead of adding these problems to the existing one")
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import rodflow
    from rodflow import CentralFlow, RodFlow, StableFlow
    from rodflow._io import write_json
    from rodflow._metrics import seed_spread
    from rodflow.problems._registry import options

    flows = {"stable": StableFlow(), "central": CentralFlow(), "rod": RodFlow(),
             "rod_taylor": RodFlow(variant="taylor")}
    command = "python " + " ".join(sys.argv)
    results = {"jax": jax.__version__, "device": str(jax.devices()[0]), "machine": platform.machine(),
               "problems": {}}
    if args.out.exists() and not args.fresh:
        # Problems are run one command at a time on a small machine: keep the others' results, each
        # with the command that produced it.
        results["problems"].update(json.loads(args.out.read_text()).get("problems", {}))
    names = [n for n in args.problems.split(",") if n]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    for name in names:
        steps = args.steps or DEFAULT_STEPS.get(name, 1000)
        dtype = "float64" if args.x64 else "float32"
        entry = results["problems"].get(name, {})
        same = (entry.get("steps"), entry.get("dtype")) == (steps, dtype)
        per_seed = dict(entry.get("per_seed", {})) if same else {}
        for seed in seeds:
            if str(seed) in per_seed:
                print(f"{name} seed {seed}: kept from {args.out}", flush=True)
                continue
            kw = {"seed": seed} if "seed" in options(name) else {}
            problem = rodflow.problems.get(name, **kw)
            per_seed[str(seed)] = _one_seed(rodflow, problem, flows, steps, args.repeats, command)
            print(name, seed, per_seed[str(seed)]["checks"], flush=True)
            ps = [per_seed[s] for s in sorted(per_seed, key=int)]
            spread = seed_spread([p["flows"] for p in ps])
            spread["checks"] = seed_spread([{"checks": p["checks"]} for p in ps])["checks"]
            spread["run"] = seed_spread([{"run": {"eos_onset_step": p["eos_onset_step"],
                                                  "sharpness_initial": p["sharpness_initial"]}}
                                         for p in ps])["run"]
            results["problems"][name] = {
                "commands": sorted({p["command"] for p in ps}), "lr": problem.lr_hint, "steps": steps,
                "dim": problem.dim, "dtype": dtype, "seeds": [int(s) for s in sorted(per_seed, key=int)],
                "spread": spread, "per_seed": per_seed}
            write_json(args.out, results)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for i, name in enumerate(results["problems"]):
        pr = results["problems"][name]["spread"]
        for j, f in enumerate(["stable", "central", "rod", "rod_taylor"]):
            x = i + 0.2 * (j - 1.5)
            color = {"stable": "tab:blue", "central": "tab:orange", "rod": "tab:red",
                     "rod_taylor": "tab:pink"}[f]
            for ax, key in zip(axes, ("rel_dist_mean_eos", "wall_s_per_unit_time")):
                v = pr[f][key]
                ax.bar(x, v["mean"] if v["mean"] is not None else float("nan"), 0.2, color=color,
                       yerr=v["std"] or 0.0, capsize=2, label=f if i == 0 else None)
    for ax, title in zip(axes, ["mean tracking error during EoS (mean +- std over seeds)",
                                "wall seconds per unit flow time"]):
        ax.set_xticks(range(len(results["problems"])), list(results["problems"]))
        ax.set(yscale="log", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"wrote {args.out}")


def _one_seed(rodflow, problem, flows, steps, repeats, command) -> dict:
    """Every flow on one initialisation: cost (median over `repeats`) and accuracy."""
    walls: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for rep in range(repeats):
        r = rodflow.compare(problem, lr=problem.lr_hint, steps=steps, flows=flows, figure=False,
                            progress=rep == 0)
        for f, m in r.metrics["flows"].items():
            walls.setdefault(f, []).append(m["wall_s"])
    per = {}
    for f, m in r.metrics["flows"].items():
        cost = flows[f].cost_per_rhs() if f in flows else {"grads": 1, "hvps": 0}
        n_rhs = m.get("rhs_evals", m["grad_evals"])
        per[f] = {
            "wall_s_per_unit_time": statistics.median(walls[f]) / steps,
            "wall_s_runs": walls[f],
            "compile_s": m["compile_s"],
            "grad_evals_per_unit_time": m["grad_evals"] / steps,
            "grads_per_unit_time": n_rhs * cost["grads"] / steps,
            "hvps_per_unit_time": n_rhs * cost["hvps"] / steps,
            **{k: v for k, v in m.items() if k not in ("wall_s", "compile_s", "grad_evals", "rhs_evals")},
        }
    rod, cen, st = per["rod"], per["central"], per["stable"]
    checks = {}
    if r.metrics["eos_onset_step"] is not None and cen["rel_dist_mean_eos"]:
        checks = {
            "rod_over_central_rel_dist": rod["rel_dist_mean_eos"] / cen["rel_dist_mean_eos"],
            "rod_over_central_wall": rod["wall_s_per_unit_time"] / cen["wall_s_per_unit_time"],
            "rod_over_stable_rel_dist": rod["rel_dist_mean_eos"] / st["rel_dist_mean_eos"],
            "central_over_stable_rel_dist": cen["rel_dist_mean_eos"] / st["rel_dist_mean_eos"],
        }
    return {"command": command, "repeats": repeats, "eos_onset_step": r.metrics["eos_onset_step"],
            "eos_onset_rule": r.metrics["eos_onset_rule"],
            "sharpness_initial": r.metrics["sharpness_initial"], "flows": per, "checks": checks,
            "total_s": time.perf_counter() - t0}


if __name__ == "__main__":
    main()
