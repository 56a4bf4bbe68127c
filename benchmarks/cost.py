"""What a step costs (issue 16): Rod Flow, the discrete run's sharpness tracking and Central Flow
against one plain GD step, every number a ratio measured in the same process.

    python benchmarks/cost.py [--problem mlp-digits] [--x64] [--steps 1500] [--central-steps 0]
        [--out benchmarks/results/cost.json] [--fresh]

Per problem (at its documented EoS step size `lr_hint` unless `--lr`) and dtype:

- `gd_ms`: one GD step, `x - lr * grad(x)` in a jit-compiled `lax.scan` of `--gd-steps` steps
  (best of 3 calls after compilation).
- one `rodflow.compare` with the discrete run (sharpness every 10 steps), gradient flow and Rod
  Flow (default settings) from the same initialisation over `--steps` steps, then the same call
  again: the second call reuses every compiled program, and its wall time per step is what is
  reported (`discrete_ms`, `stable_ms`, `rod_ms`); `compile_s` per run kind comes from the first
  call (JAX's compile-time events). `rod_over_gd = rod_ms / gd_ms`,
  `sharpness_over_gd = discrete_ms / gd_ms` (the discrete run with its sharpness tracking, its
  loss records and GD centres, against a plain GD step). Beside each flow: its
  `rel_dist_mean_eos` and `loss_err_eos` on that run.
- `hlo_control_flow_one_block`: the `while` and `conditional` instructions in the compiled
  program of one block (10 steps) of the discrete run and of Rod Flow (each executed one is a
  host synchronisation on a GPU; a static count, not the iterations run).
- with `--eig-iters-alt M`: the discrete run again with the eigensolver capped at M iterations
  (`eig_iters=M`, the cost/accuracy knob of the sharpness tracking): `discrete_ms_eig_iters_M`,
  its ratio to GD, and the relative difference of its sharpness series from the default run's
  (median and max over the measured steps; the default LOBPCG converges to a residual of 1e-4
  relative, ~1e-6 on the eigenvalue).
- with `--eig-method-alt krylov --eig-iters-alt M`: the same with the fixed-cost Krylov
  estimator of `M` blocks (`eig_method="krylov"`), under `eig_alt["krylov M"]`: its ms per step,
  ratio to GD and difference from the default run's sharpness (median, 90th percentile and max,
  over all measured steps and from the EoS onset on). With `--alt-only` only these are measured,
  for an entry already in the file: a GD step, the default discrete run and the alternative,
  all again in this process.
- with `--central-steps N`: Central Flow (default settings) over the first N steps in its own
  compare call (twice, as above): `central_ms`, `central_over_gd`, its compile time and, if
  EoS starts within N steps, its `rel_dist_mean_eos`.

The JSON records the command, JAX version, device and the 1-minute load average before the run;
results are added under `PROBLEM/lr=LR/DTYPE` keys and an entry already there is kept unless
`--fresh`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
from _record import rodflow_revision, save_entry


def _best_ms(fn, x, steps, repeats=3):
    jax.block_until_ready(fn(x))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best / steps


def _control_flow(problem, lr, rod=True, **eig):
    """`while` and `conditional` instructions in the optimised HLO of one block (10 steps) of
    the discrete run and (`rod=True`) of Rod Flow: on a GPU each executed one reads its
    predicate on the host (a synchronisation), so fewer is better. A static count of the
    program, not of the iterations it runs."""
    import jax.numpy as jnp

    import rodflow
    from rodflow._chunks import grid_discrete_chunk, grid_discrete_init, grid_flow_chunk, grid_flow_init
    from rodflow._spectrum import initial_vectors

    opt_map, flow = rodflow.GradientDescent(), rodflow.RodFlow()
    lr_, x0 = jnp.asarray([lr], problem.dtype), problem.x0[None]
    U0 = initial_vectors(problem.dim, 1, problem.dtype)
    k0, n_last = jnp.asarray(0, jnp.int32), jnp.asarray(10, jnp.int32)
    kw = dict(n_blocks=1, every=10, eig=rodflow.Settings(steps=10, **eig).eig, snapshots=False)
    carry = grid_discrete_init(problem, opt_map, lr_, x0, U0)
    hlo = {"discrete": grid_discrete_chunk.lower(problem, opt_map, lr_, carry, k0, n_last, **kw)}
    if rod:
        centres = grid_discrete_chunk(problem, opt_map, lr_, carry, k0, n_last, **kw)[3]
        fc = grid_flow_init(flow, problem, opt_map, lr_, x0, None, U0, 0)
        hlo["rod"] = grid_flow_chunk.lower(flow, problem, opt_map, lr_, fc, k0, n_last, centres, **kw,
                                           start_step=0)
    out = {}
    for name, lowered in hlo.items():
        text = lowered.compile().compiled.as_text()
        out[name] = {"while": text.count(" while("), "conditional": text.count(" conditional(")}
    return out


def _commit() -> str | None:
    commit, dirty = rodflow_revision(short=True)
    return None if commit is None else commit + ("+uncommitted rodflow changes" if dirty else "")


def _eig_alt(rodflow, problem, lr, args, gd_ms, load, default=None, hlo=True):
    """The discrete run with `eig_method=args.eig_method_alt, eig_iters=args.eig_iters_alt`
    against the default one (timed again here unless `default` is given) and a GD step; with
    `hlo`, the control flow of its compiled block."""
    import numpy as np

    if default is None:
        default = _compare_twice(rodflow, problem, lr, args.steps, ("discrete",))[1]
    alt = _compare_twice(rodflow, problem, lr, args.steps, ("discrete",), eig_method=args.eig_method_alt,
                         eig_iters=args.eig_iters_alt)[1]
    a, b = (np.asarray(r.series["discrete"]["sharpness"], float) for r in (alt, default))
    steps = np.asarray(default.series["discrete"]["sharpness_step"])
    ok = np.isfinite(a) & np.isfinite(b)
    onset = default.metrics["eos_onset_step"]

    def stats(mask):
        rel = np.abs(a[mask] - b[mask]) / np.abs(b[mask])
        if not rel.size:
            return None
        return {"median": float(np.median(rel)), "p90": float(np.quantile(rel, 0.9)),
                "max": float(rel.max()), "measurements": int(rel.size)}

    ms = {k: 1e3 * r.metrics["flows"]["discrete"]["wall_s"] / (args.steps + 1)
          for k, r in (("default", default), ("alt", alt))}
    return {"command": "python " + " ".join(sys.argv), "commit": _commit(), "method": args.eig_method_alt,
            "iters": args.eig_iters_alt, "steps": args.steps, "gd_ms": gd_ms,
            "discrete_ms": ms["default"], "discrete_ms_alt": ms["alt"],
            "sharpness_over_gd": ms["default"] / gd_ms, "sharpness_over_gd_alt": ms["alt"] / gd_ms,
            "rel_diff_from_default": {"all": stats(ok),
                                      "eos": None if onset is None else stats(ok & (steps >= onset))},
            "load_avg_1min_before": load,
            **({"hlo_control_flow_one_block_discrete": _control_flow(
                problem, lr, rod=False, eig_method=args.eig_method_alt, eig_iters=args.eig_iters_alt
            )["discrete"]} if hlo else {})}


def _compare_twice(rodflow, problem, lr, steps, flows, **settings):
    """Two identical `compare` calls: the first compiles, the second is timed (both returned)."""
    kw = dict(lr=lr, steps=steps, flows=flows, sharpness_every=10, figure=False, progress=False, **settings)
    return rodflow.compare(problem, **kw), rodflow.compare(problem, **kw)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="mlp-digits")
    ap.add_argument("--lr", type=float, default=None, help="default: the problem's lr_hint")
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--gd-steps", type=int, default=500)
    ap.add_argument("--central-steps", type=int, default=0, help="0: no Central Flow")
    ap.add_argument("--eig-iters-alt", type=int, default=0, help="0: no capped-eigensolver run")
    ap.add_argument("--eig-method-alt", default="auto", help="eigensolver of the --eig-iters-alt run")
    ap.add_argument("--alt-only", action="store_true",
                    help="only (re)measure the --eig-iters-alt run of an entry already in the file")
    ap.add_argument("--flows", default="stable,rod", help="flows timed beside the discrete run")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cost.json"))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--hlo-only", action="store_true",
                    help="only (re)count the control flow of an entry already in the file")
    args = ap.parse_args(argv)
    if args.eig_method_alt != "auto" and not args.eig_iters_alt:
        ap.error("--eig-method-alt needs --eig-iters-alt M")
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import rodflow
    from rodflow._io import write_json

    results = json.loads(args.out.read_text()) if args.out.exists() and not args.fresh else {"runs": {}}
    problem = rodflow.problems.get(args.problem)
    lr = args.lr if args.lr is not None else problem.lr_hint
    key = f"{args.problem}/lr={lr:g}/{'f64' if args.x64 else 'f32'}"
    if args.hlo_only:
        entry = results["runs"][key]
        entry["hlo_control_flow_one_block"] = _control_flow(problem, lr)
        entry["hlo_command"] = "python " + " ".join(sys.argv)
        entry["hlo_commit"] = _commit()
        write_json(args.out, results)
        print(json.dumps({key: entry["hlo_control_flow_one_block"]}))
        return 0
    if args.alt_only:
        if key not in results["runs"] or not args.eig_iters_alt:
            raise SystemExit(f"--alt-only needs --eig-iters-alt and an entry {key} in {args.out}.")
    elif key in results["runs"]:
        print(f"{key}: already in {args.out} (--fresh to redo)")
        return 0
    load = os.getloadavg()[0]
    lr_ = jnp.asarray(lr, problem.dtype)

    @jax.jit
    def gd(x):
        step = lambda x, _: (x - lr_ * jax.grad(problem.loss_flat)(x), None)
        return jax.lax.scan(step, x, None, length=args.gd_steps)[0]

    gd_ms = _best_ms(gd, problem.x0, args.gd_steps)
    if args.alt_only:
        entry = results["runs"][key]
        entry.setdefault("eig_alt", {})[f"{args.eig_method_alt} {args.eig_iters_alt}"] = _eig_alt(
            rodflow, problem, lr, args, gd_ms, load)
        write_json(args.out, results)
        print(json.dumps({key: entry["eig_alt"]}, indent=1))
        return 0
    flows = tuple(args.flows.split(","))
    first_run, second_run = _compare_twice(rodflow, problem, lr, args.steps, flows)
    first, second = first_run.metrics, second_run.metrics
    per_step = {k: 1e3 * v["wall_s"] / (args.steps + 1) for k, v in second["flows"].items()}
    entry = {
        "command": "python " + " ".join(sys.argv),
        "commit": _commit(),
        "steps": args.steps, "lr": lr, "dim": problem.dim, "eos_onset_step": second["eos_onset_step"],
        "gd_ms": gd_ms,
        "discrete_ms": per_step["discrete"], "sharpness_over_gd": per_step["discrete"] / gd_ms,
        **{f"{f}_ms": per_step[f] for f in flows}, **{f"{f}_over_gd": per_step[f] / gd_ms for f in flows},
        "compile_s": {k: v["compile_s"] for k, v in first["flows"].items()},
        "accuracy": {k: {m: second["flows"][k].get(m) for m in ("rel_dist_mean_eos", "loss_err_eos")}
                     for k in flows},
        "grad_evals_per_step": {k: second["flows"][k]["grad_evals"] / (args.steps + 1) for k in flows},
        "load_avg_1min_before": load,
        "hlo_control_flow_one_block": _control_flow(problem, lr),
    }
    if args.eig_iters_alt and args.eig_method_alt == "auto":  # the capped-LOBPCG keys of older entries
        M = args.eig_iters_alt
        alt = _eig_alt(rodflow, problem, lr, args, gd_ms, load, default=second_run, hlo=False)
        rel = alt["rel_diff_from_default"]["all"]
        entry[f"discrete_ms_eig_iters_{M}"] = alt["discrete_ms_alt"]
        entry[f"sharpness_over_gd_eig_iters_{M}"] = alt["sharpness_over_gd_alt"]
        entry[f"sharpness_rel_diff_eig_iters_{M}"] = {k: rel[k] for k in ("median", "max", "measurements")}
    elif args.eig_iters_alt:
        entry["eig_alt"] = {f"{args.eig_method_alt} {args.eig_iters_alt}": _eig_alt(
            rodflow, problem, lr, args, gd_ms, load, default=second_run)}
    if args.central_steps:
        cf, cs = (r.metrics for r in _compare_twice(rodflow, problem, lr, args.central_steps, ("central",)))
        c_ms = 1e3 * cs["flows"]["central"]["wall_s"] / (args.central_steps + 1)
        entry.update(central_steps=args.central_steps, central_ms=c_ms, central_over_gd=c_ms / gd_ms)
        entry["compile_s"]["central"] = cf["flows"]["central"]["compile_s"]
        entry["accuracy"]["central"] = {m: cs["flows"]["central"].get(m)
                                        for m in ("rel_dist_mean_eos", "loss_err_eos")}
    save_entry(args.out, results, "runs", key, entry)
    print(json.dumps({key: entry}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
