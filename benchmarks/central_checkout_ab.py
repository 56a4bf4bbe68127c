"""Central Flow's cost at one rodflow checkout (for A/B comparisons across commits, issue 16).

    python benchmarks/central_checkout_ab.py CHECKOUT OUT.json [STEPS [PROBLEM [f32|f64]]]

Imports rodflow from the directory CHECKOUT (e.g. a `git worktree` of an earlier commit), then on
PROBLEM (default `mlp-digits`, at its `lr_hint`; float64 unless `f32`) times one GD step (a
compiled `lax.scan` of 500 steps, best of 3) and Central Flow over STEPS steps (default 500: on
mlp-digits EoS starts at step 330) as the second of two
`rodflow.compare` calls (the first compiles). Writes `central_ms` (per step), `central_over_gd`,
the first call's compile time, the run's `rel_dist_mean_eos` and `loss_err_eos`, and the load
average before the run. Run the two checkouts one after the other on an idle machine.
"""

import json
import os
import sys

sys.path.insert(0, sys.argv[1])
import jax  # noqa: E402

jax.config.update("jax_enable_x64", (sys.argv[5] if len(sys.argv) > 5 else "f64") == "f64")
import jax.numpy as jnp  # noqa: E402
from cost import _best_ms, _compare_twice  # noqa: E402  (benchmarks/cost.py: the same timing)

import rodflow  # noqa: E402


def main():
    out_path, steps = sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 500
    p = rodflow.problems.get(sys.argv[4] if len(sys.argv) > 4 else "mlp-digits")
    lr = p.lr_hint
    lr_ = jnp.asarray(lr, p.dtype)
    gd = jax.jit(lambda x: jax.lax.scan(lambda x, _: (x - lr_ * jax.grad(p.loss_flat)(x), None), x, None,
                                        length=500)[0])
    gd_ms = _best_ms(gd, p.x0, 500)
    load = os.getloadavg()[0]
    first, second = (r.metrics for r in _compare_twice(rodflow, p, lr, steps, ("central",)))
    c = second["flows"]["central"]
    out = {"command": "python " + " ".join(sys.argv), "rodflow": rodflow.__file__, "steps": steps,
           "problem": p.name, "lr": lr, "dtype": str(p.dtype),
           "gd_ms": gd_ms, "central_ms": 1e3 * c["wall_s"] / (steps + 1),
           "compile_s": first["flows"]["central"]["compile_s"],
           "rel_dist_mean_eos": c.get("rel_dist_mean_eos"), "loss_err_eos": c.get("loss_err_eos"),
           "load_avg_1min_before": load}
    out["central_over_gd"] = out["central_ms"] / out["gd_ms"]
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
    print(out)


if __name__ == "__main__":
    main()
