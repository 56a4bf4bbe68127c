"""Compile time of each run kind's first call (issue 16: no flow over 15 s on mlp-digits).

    python benchmarks/compile_times.py [--problem mlp-digits] [--steps 100] [--repeats 3]
        [--out benchmarks/results/compile_times.json]

Each repeat is a fresh Python process (nothing compiled yet) that makes one `rodflow.compare` call
with the discrete run, gradient flow (`stable`), Rod Flow and Central Flow at their defaults,
in float32 and then, in another process, in float64, and reports each run kind's `compile_s`
(JAX's tracing, lowering and XLA compile events of that run kind's chunk program,
`metrics.json`'s `compile_s`; the initial states are computed op by op and not counted, except
the Krylov estimator's compiled cold start, not used here) and the
process's wall time. The JSON keeps the rodflow commit measured (and whether its files had
uncommitted changes; `--label` names an entry, e.g. for an older checkout measured with this
script: `git worktree add /tmp/old COMMIT`, then `PYTHONPATH=/tmp/old python
benchmarks/compile_times.py --label ...`), every repeat, the median and the max per run kind and
dtype, the load average before each process, and the command. `cost.py` reports the same
`compile_s` beside its timings, from the first of its two calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _record import load_results, rodflow_revision, save_entry

FLOWS = ("discrete", "stable", "rod", "central")


def _one(problem: str, steps: int, x64: bool) -> dict:
    """One compare call in this (fresh) process: `compile_s` per run kind."""
    import jax

    if x64:
        jax.config.update("jax_enable_x64", True)
    import rodflow

    p = rodflow.problems.get(problem)
    res = rodflow.compare(p, lr=p.lr_hint, steps=steps, flows=FLOWS, figure=False, progress=False)
    return {k: d["compile_s"] for k, d in res.metrics["flows"].items()}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="mlp-digits")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compile_times.json"))
    ap.add_argument("--label", default=None, help="entry key suffix (e.g. the code measured)")
    ap.add_argument("--child", choices=("f32", "f64"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_one(args.problem, args.steps, args.child == "f64")))
        return

    import rodflow

    src = Path(rodflow.__file__).parent
    commit, dirty = rodflow_revision()
    entry = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
             "rodflow_commit": commit, "rodflow_modified": dirty, "rodflow_path": str(src),
             "problem": args.problem, "steps": args.steps, "flows": list(FLOWS), "dtypes": {}}
    for dtype in ("f32", "f64"):
        runs = []
        for _ in range(args.repeats):
            load, t0 = os.getloadavg()[0], time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--problem", args.problem, "--steps",
                                   str(args.steps), "--child", dtype], capture_output=True, text=True,
                                  check=True)
            runs.append({"compile_s": json.loads(proc.stdout.strip().splitlines()[-1]),
                         "process_s": time.perf_counter() - t0, "load_avg_1min_before": load})
            print(dtype, runs[-1], flush=True)
        kinds = runs[0]["compile_s"]
        entry["dtypes"][dtype] = {
            "runs": runs,
            "median_s": {k: statistics.median(r["compile_s"][k] for r in runs) for k in kinds},
            "max_s": {k: max(r["compile_s"][k] for r in runs) for k in kinds},
        }
    key = f"{args.problem}/steps={args.steps}" + (f"/{args.label}" if args.label else "")
    save_entry(args.out, load_results(args.out, "entries"), "entries", key, entry)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
