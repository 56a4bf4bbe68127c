"""The largest growth rate the paper's rod reaches on the committed benchmark runs (`growth_guard`).

    python benchmarks/growth_guard.py {f32,x64} benchmarks/growth_guard_configs/NAME.json \
        > benchmarks/results/growth_guard_NAME.jsonl

`RodFlow`'s default growth, `linear_growth`, is the paper's rate `-2 - q` up to `GROWTH_GUARD`
per step and guarded above it (see its docstring). This script runs every Rod Flow with that
growth (default, `floor="rounding"`, Tsit5, Heun at `dt 1`, the Taylor variant, no floor, the
rods of the optimisers with state, a sweep) on the configurations of the committed CPU results
(all but `scale.json`'s two-step `cnn-cifar10` runs), with the guard disabled, and prints one
JSON line per configuration with the largest `-2 - q` seen at any right-hand side (a
`jax.debug.callback`, so slower than a plain run):
where it stays at or below `GROWTH_GUARD` the guard changes nothing. The configurations
(`benchmarks/growth_guard_configs/`): `f32.json` the float32 networks and toys of
`eos_tracking`, `noise_floor`, `flows_cost_accuracy`, `cost`, `central_settings` and the
sweep of `sweep_throughput`; `x64.json` the float64 runs of `core_acceptance`, `rod_timing`,
`eos_tracking`, `schedule` and `dtype_independence`; `opt.json` every run of `optimizers.py`
(`RUNS`, cold and, where the JSON has one, warm). A configuration's longest run covers its
shorter ones (the same trajectory).
"""

from __future__ import annotations

import json
import sys
import time

import jax


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    jax.config.update("jax_enable_x64", argv[0] == "x64")
    import diffrax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import rodflow
    from rodflow import RodFlow, make_map
    from rodflow.flows import _rod

    rec = {"max": -np.inf}

    def record(x):
        rec["max"] = max(rec["max"], float(np.max(np.asarray(x))))

    original = _rod.linear_growth

    def wrapped(q, m_perp):
        jax.debug.callback(record, jnp.max(-2.0 - q))
        return original(q, m_perp)

    _rod.linear_growth = wrapped
    _rod.GROWTH_GUARD = float("inf")  # the unguarded (committed) trajectories
    for c in json.loads(open(argv[1]).read()):
        jax.clear_caches()
        rec["max"] = -np.inf
        p = rodflow.problems.get(c["problem"], **({} if c.get("seed") is None else {"seed": c["seed"]}),
                                 **c.get("pkw", {}))
        lr = c.get("lr") or p.lr_hint
        if c.get("schedule"):
            lr = optax.linear_schedule(*c["schedule"])
        flows = {}
        for i, v in enumerate(c.get("rods", [{}])):
            v = dict(v)
            if "solver" in v:
                v["solver"] = getattr(diffrax, v["solver"])()
            flows[f"rod{i}"] = RodFlow(**v)
        opt, start = None, c.get("start", 0)
        if c.get("opt"):  # as optimizers.py: the rods on z, and with second moments the smooth-nu rods
            opt = make_map(c["opt"], **c.get("opt_kw", {}))
            start = rodflow.transient_steps(opt) if c.get("warm") else 0
            if opt.split(p, opt.init_state(p, p.x0, lr)).nu.size and not c.get("rods"):
                flows = {"rod": RodFlow(), "rod_smooth_nu": RodFlow(smooth_nu=True),
                         "rod_nu_centre": RodFlow(smooth_nu=True, nu_at="centre")}
        t = time.time()
        kw = dict(steps=c["steps"], flows=flows, sharpness_every=c.get("every", 10), figure=False,
                  **({"optimizer": opt} if opt is not None else {}))
        if c.get("lrs"):
            rodflow.sweep(p, lrs=c["lrs"], **kw)
        else:
            rodflow.compare(p, lr=lr, start_step=start, **kw)
        print(json.dumps({"config": c, "max_linear_rate": rec["max"], "s": round(time.time() - t, 1)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
