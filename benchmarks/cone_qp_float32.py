"""The cone QP in float32 at Central Flow's default tolerance (issue 16).

    python benchmarks/cone_qp_float32.py --label LABEL [--checkout DIR] [--problems 20]
        [--out benchmarks/results/cone_qp_float32.json]

Imports `rodflow` from DIR (default: this repository; e.g. a `git worktree` of an earlier commit
for a before/after comparison) and solves `--problems` random cone problems (k = 2, 3, 4 in turn;
the generator of tests/test_central.py, seed 0) in float32 with Central Flow's defaults
(`tol 1e-10`, `max_iters 500`), and in float64 to `tol 1e-13` as the reference. Records, under
LABEL: the iterations (median, max, how many stopped at the cap), the final relative residual,
and the distance of float32's `X` from float64's, relative to `max(|X_64|, 1)` (median, max).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--checkout", type=Path, default=ROOT)
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cone_qp_float32.json")
    args = ap.parse_args(argv)
    sys.path[:0] = [str(args.checkout), str(ROOT / "tests")]
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from test_central import _random_problem

    import rodflow
    from rodflow.flows._cone_qp import solve_cone_qp

    max_iters = 500
    s32 = jax.jit(lambda a, b: solve_cone_qp(a, b, max_iters=max_iters, tol=1e-10))
    s64 = jax.jit(lambda a, b: solve_cone_qp(a, b, max_iters=5000, tol=1e-13))
    rng = np.random.default_rng(0)
    iters, res, err = [], [], []
    for i in range(args.problems):
        A, B = _random_problem(rng, 2 + i % 3)
        X32, info = s32(A.astype(jnp.float32), B.astype(jnp.float32))
        X64, _ = s64(A, B)
        iters.append(int(info.iters))
        res.append(float(info.residual))
        dist = float(jnp.linalg.norm(X32.astype(jnp.float64) - X64))
        err.append(dist / max(float(jnp.linalg.norm(X64)), 1.0))
    entry = {"command": "python " + shlex.join(sys.argv), "rodflow": str(Path(rodflow.__file__).parent),
             "problems": args.problems, "tol": 1e-10, "max_iters": max_iters,
             "iters_median": float(np.median(iters)), "iters_max": max(iters),
             "at_cap": sum(i >= max_iters for i in iters),
             "residual_median": float(np.median(res)), "residual_max": max(res),
             "x_err_vs_f64_median": float(np.median(err)), "x_err_vs_f64_max": max(err)}
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.label] = entry
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
