"""Core acceptance (issue 2): GD vs gradient flow vs Rod Flow configurations on one run.

    python benchmarks/core_acceptance.py [--steps 1500] [--out benchmarks/results/core_acceptance.json]

Runs `mlp-digits` (float64, lr 0.07, 1500 steps) with the discrete run, gradient flow and several
Rod Flow configurations side by side (default Euler dt 0.5; Tsit5; Heun dt 1; Taylor variant; no
noise floor), plus the quartic and eos-toy checks of the design note, and writes the metrics.
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

import diffrax  # noqa: E402
import numpy as np  # noqa: E402

import rodflow  # noqa: E402
from rodflow import RodFlow, StableFlow  # noqa: E402
from rodflow._io import write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/core_acceptance.json"))
    args = ap.parse_args(argv)
    results = {"command": "python " + " ".join(sys.argv), "jax": jax.__version__,
               "device": str(jax.devices()[0]), "machine": platform.machine(), "runs": {}}

    flows = {
        "stable": StableFlow(),
        "rod": RodFlow(),
        "rod_tsit5": RodFlow(solver=diffrax.Tsit5(), rtol=1e-6, atol=1e-9),
        "rod_heun_dt1": RodFlow(solver=diffrax.Heun(), dt=1.0),
        "rod_taylor": RodFlow(variant="taylor"),
        "rod_no_floor": RodFlow(eps_floor=0.0),
    }
    t = time.perf_counter()
    r = rodflow.compare(rodflow.problems.get("mlp-digits"), lr=0.07, steps=args.steps, flows=flows,
                        out=args.out.parent / "core_acceptance_mlp", overwrite=True, progress=True)
    print(r.table())
    results["runs"]["mlp-digits"] = {**r.metrics, "total_s": time.perf_counter() - t}

    for name, lr, steps in (("quartic", 0.2, 2000), ("eos-toy", 0.4, 1000)):
        r = rodflow.compare(rodflow.problems.get(name), lr=lr, steps=steps, sharpness_every=1,
                            figure=False)
        print(r.table())
        m = r.metrics
        m["final_centre"] = {k: np.asarray(v).tolist() for k, v in r.final.items()}
        m["final_sharpness"] = {k: float(s["sharpness"][-1]) for k, s in r.series.items()}
        results["runs"][name] = m
    write_json(args.out, results)
    print(f"wrote {args.out}")
    print(json.dumps({k: {f: v["flows"][f].get("rel_dist_mean_eos") for f in v["flows"]}
                      for k, v in results["runs"].items()}, indent=1))


if __name__ == "__main__":
    main()
