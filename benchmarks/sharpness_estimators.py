"""How accurate is a cheap sharpness estimate along a GD run at EoS (issue 16)?

    python benchmarks/sharpness_estimators.py [--problem mlp-digits] [--lr 0.07] [--steps 1500]
        [--x64] [--out benchmarks/results/sharpness_estimators.json]

Along one GD run, at every 10th step (as the discrete run measures), the top Hessian eigenvalue
is computed by a reference (LOBPCG to a relative residual of 1e-9, warm-started) and by cheaper
estimators, each warm-started from its *own* previous vector as it would be in a run:

- `lobpcg rtol R`: `jax.experimental.sparse.linalg.lobpcg_standard` (at most 40 iterations) to a
  relative residual `R`; the library's default is `R = 1e-4`. Each iteration costs 4k
  Hessian-vector products (HVPs) in JAX's implementation, plus k at the start (k = 1 here).
- `krylov m`: the library's `eig_method="krylov"` with `eig_iters=m`: Rayleigh-Ritz on the
  Krylov space `span(u, Hu, ..., H^{m-1} u)` of the previous vector `u` (m HVPs; `m = 2` is one
  step of steepest ascent on the Rayleigh quotient; `m = 1` is the Rayleigh quotient of `u`,
  and the vector handed on is `Hu / |Hu|`, one power step). Its first vector is, as in a run, the top
  eigenvector at the start converged by the default eigensolver (LOBPCG, at most 40
  iterations); every other estimator starts from the run's fixed random block.

Reported per estimator: HVPs per measurement (mean), and the relative error
`|estimate - reference| / reference`: median, 90th percentile and maximum, over all measured
steps and over those from the EoS onset on (the first measured step whose reference sharpness
exceeds `2/lr` after one at or below it, or the first above it: `rodflow._metrics.eos_onset_rule`
applied to the reference). The reference's own iteration
counts are recorded (`reference_iterations`); a measurement at its cap of 200 would be named in
`reference_at_cap`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="mlp-digits")
    ap.add_argument("--lr", type=float, default=0.07)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sharpness_estimators.json"))
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import numpy as np
    from jax.experimental.sparse.linalg import lobpcg_standard

    import rodflow
    from rodflow._derivatives import hvp
    from rodflow._io import write_json
    from rodflow._metrics import eos_onset_rule
    from rodflow._spectrum import initial_vectors, top_eigenpairs

    p = rodflow.problems.get(args.problem)
    f, n, lr, every = p.loss_flat, p.dim, args.lr, 10
    step = jax.jit(lambda x: jax.lax.scan(lambda x, _: (x - lr * jax.grad(f)(x), None), x, None,
                                          length=every)[0])

    def matvec(x):
        return jax.vmap(lambda u: hvp(f, x, u), in_axes=1, out_axes=1)

    def lobpcg(rtol, cap):
        @jax.jit
        def run(x, U):
            theta, U, its = lobpcg_standard(matvec(x), U, m=cap, tol=rtol / (10.0 * n))
            return theta[0], U, 1 + 4 * its  # HVPs (k = 1): A X at the start, A [X P R] and A X per iteration

        return run

    def krylov(m):  # the library's fixed-cost estimator, eig_method="krylov", eig_iters=m
        @jax.jit
        def run(x, U):
            w, U = top_eigenpairs(f, x, U, method="krylov", max_iters=m)
            return w[0], U, m

        return run

    reference = lobpcg(1e-9, 200)
    estimators = {f"lobpcg rtol {r:g}": lobpcg(r, 40) for r in (1e-4, 1e-3, 1e-2)}
    estimators.update({f"krylov {m}": krylov(m) for m in (1, 2, 3, 4, 6, 8)})
    x = p.x0
    U0 = initial_vectors(n, 1, x.dtype)
    # the Krylov estimator's first measurement starts, as in a run, from the vectors converged by
    # the default eigensolver (rodflow._chunks.cold_start); LOBPCG's from the random block
    U_cold = top_eigenpairs(f, x, U0, method="auto", max_iters=40)[1]
    U_ref, U_est = U0, {name: U_cold if name.startswith("krylov") else U0 for name in estimators}
    ref, ref_its = [], []
    est, hvps = {name: [] for name in estimators}, {name: [] for name in estimators}
    for _ in range(args.steps // every + 1):
        lam, U_ref, h = reference(x, U_ref)
        ref.append(float(lam))
        ref_its.append((int(h) - 1) // 4)
        for name, fn in estimators.items():
            lam_e, U_est[name], h = fn(x, U_est[name])
            est[name].append(float(lam_e))
            hvps[name].append(int(h))
        x = step(x)
    ref = np.asarray(ref)
    T = 2.0 / lr
    onset_step, _ = eos_onset_rule(np.arange(len(ref)) * every, ref, T)
    onset = None if onset_step is None else onset_step // every

    def stats(rel):
        return {"median": float(np.median(rel)), "p90": float(np.percentile(rel, 90)),
                "max": float(rel.max())}

    out = {"command": "python " + " ".join(sys.argv), "problem": args.problem, "lr": lr,
           "steps": args.steps, "every": every, "dtype": str(p.dtype), "dim": n, "jax": jax.__version__,
           "eos_onset_step": None if onset is None else onset * every,
           "reference_range": [float(ref.min()), float(ref.max())], "threshold": T,
           "reference_iterations": {"median": float(np.median(ref_its)), "max": int(max(ref_its))},
           "reference_at_cap": [i * every for i, n in enumerate(ref_its) if n >= 200], "estimators": {}}
    for name in estimators:
        rel = np.abs(np.asarray(est[name]) - ref) / ref
        out["estimators"][name] = {"hvps_mean": float(np.mean(hvps[name])), "all": stats(rel),
                                   "eos": None if onset is None else stats(rel[onset:])}
    write_json(args.out, out)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
