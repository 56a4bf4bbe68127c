"""The rod's noise floor against GD's measured rounding noise (issue 15: catapult timing).

    python benchmarks/noise_floor.py [--problem mlp-teacher] [--lr LR] [--steps 600] [--x64]
        [--seed S] [--start 0|auto] [--order2] [--central] [--every 5]
        [--out benchmarks/results/noise_floor.json] [--fresh]

Two measurements on one problem, step size and dtype (`--lr` defaults to the problem's
`lr_hint`):

1. **GD's oscillation along its top Hessian eigenvector.** GD runs (`x <- x - lr grad`, a
   `lax.scan`); every `--every` steps the top eigenvector `u` of the Hessian at `x_k` (power
   iteration on Hessian-vector products, 100 iterations) gives GD's oscillation
   `osc_k = |u . (x_{k+1} - x_k)| / 2`, the length of GD's rod along `u`. Beside it, the two
   floors a rod centred at `c_k = (x_k + x_{k+1})/2` along `u` would have: `eps |c_k|`
   (`floor="eps"`, the default) and `sigma_k = sqrt(sum_i u_i^2 ulp(c_k,i)^2 / 12)`, the
   rounding error of one stored iterate along `u` (`floor="rounding"`). Summary: quantiles of
   `osc / eps|c|` and `osc / sigma` over the samples taken below the threshold
   (`lr lambda < 2`) after the first 20 steps (the quiet phases where GD's oscillation decays to
   its noise and the floor decides where the rod regrows from).
2. **Side by side on the same run** (`rodflow.compare`): gradient flow and Rod Flow with each
   floor, with the paper's growth and with the rod map's (`growth="map"`) (with `--order2` also the
   `order=2` rod with each floor, with `--central` Central Flow), every
   flow's tracking and loss metrics and its loss peaks against GD's (`rod_timing.timing`).

`--seed` draws the problem's initialisation with that seed (default: the problem's own start);
`--start auto` starts the flows after a catapult from initialisation (`start_step="auto"`).
Results go under `PROBLEM/lr=LR/DTYPE[/seed=S][/start=auto]` in the JSON with the command; a key already there
is kept unless `--fresh`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).parent))


def gd_noise(problem, lr, steps, every):
    """GD's oscillation along the top Hessian eigenvector and both floors, every `every` steps."""
    import jax.numpy as jnp
    import numpy as np

    from rodflow.flows._rod_base import rounding_noise

    f = problem.loss_flat
    grad = jax.grad(f)

    def step(x, _):
        return x - lr * grad(x), x

    _, xs = jax.jit(lambda x: jax.lax.scan(step, x, None, length=steps + 1))(problem.x0)

    @jax.jit
    def top(x):
        def body(_, carry):
            v, _ = carry
            w = jax.jvp(grad, (x,), (v,))[1]
            return w / jnp.linalg.norm(w), jnp.vdot(v, w)

        v0 = jax.random.normal(jax.random.PRNGKey(1), x.shape, x.dtype)
        return jax.lax.fori_loop(0, 100, body, (v0 / jnp.linalg.norm(v0), jnp.zeros((), x.dtype)))

    eps = float(jnp.finfo(xs.dtype).eps)
    rows = []
    for k in range(0, steps, every):
        u, lam = top(xs[k])
        c, r = 0.5 * (xs[k + 1] + xs[k]), 0.5 * (xs[k + 1] - xs[k])
        rows.append({"step": k, "lr_lambda": float(lr * lam), "osc": float(abs(jnp.vdot(u, r))),
                     "eps_c": eps * float(jnp.linalg.norm(c)), "sigma": float(rounding_noise(c, u))})
    quiet = [w for w in rows if w["step"] >= 20 and w["lr_lambda"] < 2.0]

    def quantiles(key):
        if not quiet:
            return None
        ratio = np.array([w["osc"] / w[key] for w in quiet])
        return {q: float(np.quantile(ratio, float(q))) for q in ("0.1", "0.5", "0.9")}

    return {"samples": rows, "quiet_samples": len(quiet),
            "osc_over_eps_c": quantiles("eps_c"), "osc_over_sigma": quantiles("sigma"),
            "sigma_over_eps_c_median": float(np.median([w["sigma"] / w["eps_c"] for w in rows]))}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="mlp-teacher")
    ap.add_argument("--lr", type=float, default=None, help="default: the problem's lr_hint")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--seed", type=int, default=None, help="initialisation seed (default: its own start)")
    ap.add_argument("--start", default="0", choices=("0", "auto"), help="the flows' start_step")
    ap.add_argument("--order2", action="store_true", help="add the order-2 rod with each floor")
    ap.add_argument("--central", action="store_true", help="add Central Flow (costly on networks)")
    ap.add_argument("--every", type=int, default=5, help="eigenvector sample spacing (steps)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/noise_floor.json"))
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from rod_timing import timing

    import rodflow
    from rodflow._io import write_json

    problem = rodflow.problems.get(args.problem, **({} if args.seed is None else {"seed": args.seed}))
    lr = problem.lr_hint if args.lr is None else args.lr
    key = f"{args.problem}/lr={lr:g}/{'f64' if args.x64 else 'f32'}"
    key += ("" if args.seed is None else f"/seed={args.seed}") + ("" if args.start == "0" else "/start=auto")
    start = 0 if args.start == "0" else "auto"
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    if key in results["runs"] and not args.fresh:
        print(f"{key}: already in {args.out} (--fresh to redo)")
        return
    t0 = time.perf_counter()
    noise = gd_noise(problem, lr, args.steps, args.every)
    flows = {"stable": rodflow.StableFlow(), "rod": rodflow.RodFlow(),
             "rod_rounding": rodflow.RodFlow(floor="rounding"), "rod_map": rodflow.RodFlow(growth="map"),
             "rod_map_rounding": rodflow.RodFlow(growth="map", floor="rounding")}
    if args.order2:
        flows["rod_order2"] = rodflow.RodFlow(order=2)
        flows["rod_order2_rounding"] = rodflow.RodFlow(order=2, floor="rounding")
    if args.central:
        flows["central"] = rodflow.CentralFlow()
    r = rodflow.compare(problem, lr=lr, steps=args.steps, flows=flows, sharpness_every=10, figure=False,
                        start_step=start)
    m = r.metrics
    entry = {"command": "python " + " ".join(sys.argv), "jax": jax.__version__,
             "device": str(jax.devices()[0]), "problem": args.problem, "seed": args.seed, "lr": lr,
             "steps": args.steps,
             "dtype": m["dtype"], "n_params": int(problem.dim), "start_step": m["start_step"],
             "eos_onset_step": m["eos_onset_step"],
             "threshold": m["threshold"], "gd_noise": noise}
    entry.update(timing(r, flows))
    entry["total_s"] = time.perf_counter() - t0
    # re-read before writing: another run may have added its key meanwhile
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    results["runs"][key] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    print(f"== {key} ({entry['total_s']:.0f} s): GD's oscillation along u over {noise['quiet_samples']} "
          f"quiet samples: / eps|c| {noise['osc_over_eps_c']}, / sigma {noise['osc_over_sigma']}")
    print(f"GD peaks {entry['discrete_peaks'][:8]}")
    for f in flows:
        e = entry["flows"][f]
        print(f"  {f:<20} d {e['rel_dist_mean_eos']}  loss err {e['loss_err_eos']}  lag "
              f"{e['catapult_lag_steps']}  peaks {e['peaks'][:6]}  offsets {e['peak_offsets']}")


if __name__ == "__main__":
    main()
