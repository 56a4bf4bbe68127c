"""Central Flow's cost against its accuracy, setting by setting (issue 16: half the cost at the
same accuracy?).

    python benchmarks/central_settings.py [--problem mlp-digits] [--steps 800] [--x64] [--seed 0]
        [--out benchmarks/results/central_settings.json]

One `rodflow.compare` call (one GD run at the problem's `lr_hint`) with Rod Flow and four
configurations of Central Flow side by side: the default (`dt = 0.25`: 4 Euler substeps per GD
step, `k = 4` tracked eigenpairs), `dt = 0.5` (2 substeps; the cone problem's horizon follows
`dt`), `k = 2`, and both. Per flow: execution time per unit of flow time (`wall_s` of the run,
compilation excluded, over `steps`), its ratio to the default Central Flow's, compile time,
gradient evaluations per unit time, `rel_dist_mean_eos` and `loss_err_eos`, and the relative
change of `rel_dist_mean_eos` from the default's (`d_change`; the issue's bar is 5%); for
Central Flow also `k`, the largest number of eigenvalues it counted as critical
(`lr lambda > 1.95`, `n_critical`, at most `k`) and the steps at which there were more than 2. Entries
are keyed `PROBLEM/seed=S/DTYPE/steps=N`; the file is re-read before writing, so runs of other
problems are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
from _record import load_results, save_entry


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="mlp-digits")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/central_settings.json"))
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import numpy as np

    import rodflow

    problem = rodflow.problems.get(args.problem, **({"seed": args.seed} if args.seed else {}))
    flows = {"rod": rodflow.RodFlow(),
             "central": rodflow.CentralFlow(),
             "central dt 0.5": rodflow.CentralFlow(dt=0.5),
             "central k 2": rodflow.CentralFlow(k=2),
             "central dt 0.5, k 2": rodflow.CentralFlow(dt=0.5, k=2)}
    load = os.getloadavg()[0]
    res = rodflow.compare(problem, lr=problem.lr_hint, steps=args.steps, flows=flows, figure=False,
                          progress=False)
    m = res.metrics["flows"]
    ref = m["central"]
    entry = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
             "lr": problem.lr_hint, "dim": problem.dim, "steps": args.steps,
             "eos_onset_step": res.metrics["eos_onset_step"], "load_avg_1min_before": load, "flows": {}}
    for label, flow in flows.items():
        f = m[label]
        d = f.get("rel_dist_mean_eos")
        extra = {}
        if label != "rod":  # eigenvalues with lr * lambda > critical (1.95), at most k by construction
            n = np.asarray(res.series[label]["n_critical"], float)
            extra = {"k": flow.k, "n_critical_max": float(np.nanmax(n)),
                     "steps_with_n_critical_above_2": int(np.sum(n > 2))}
        entry["flows"][label] = {
            "ms_per_unit_time": 1e3 * f["wall_s"] / args.steps,
            "over_default_central": f["wall_s"] / ref["wall_s"],
            "compile_s": f["compile_s"],
            "grad_evals_per_unit_time": f["grad_evals"] / args.steps,
            "rel_dist_mean_eos": d, "loss_err_eos": f.get("loss_err_eos"),
            "d_change": None if d is None or ref.get("rel_dist_mean_eos") is None
            else d / ref["rel_dist_mean_eos"] - 1.0,
            **extra,
        }
    key = f"{args.problem}/seed={args.seed}/{'f64' if args.x64 else 'f32'}/steps={args.steps}"
    save_entry(args.out, load_results(args.out, "runs"), "runs", key, entry)
    print(json.dumps({key: entry}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
