"""Initialisation does not depend on the dtype (issue 14): the acceptance run in float32 and in
float64 from the same seed.

    python benchmarks/dtype_independence.py [--problem mlp-digits] [--lr 0.07] [--steps 1500]

Runs `rodflow compare --problem P --lr LR --steps N --flows discrete,rod` once without and once
with `--x64` (two processes: `jax_enable_x64` is global), each into its own folder under
`benchmarks/results/dtype_independence/`, and records in `dtype_independence.json` the largest
difference between the two initial parameter vectors, both EoS onsets (with the rule that
applied and the initial sharpness) and their relative difference.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

OUT = Path("benchmarks/results/dtype_independence")


_X0 = ("import sys, jax, numpy as np; jax.config.update('jax_enable_x64', sys.argv[2] == '1'); "
       "import rodflow; np.save(sys.stdout.buffer, np.asarray(rodflow.problems.get(sys.argv[1]).x0))")


def _initial(problem: str, x64: bool) -> np.ndarray:
    """The problem's initial parameter vector, built in a fresh process with or without x64."""
    import io

    raw = subprocess.run([sys.executable, "-c", _X0, problem, "1" if x64 else "0"], check=True,
                         capture_output=True).stdout
    return np.load(io.BytesIO(raw))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="mlp-digits")
    ap.add_argument("--lr", type=float, default=0.07)
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args(argv)
    import jax

    from rodflow._io import write_json

    runs = {}
    for dtype, extra in (("float32", []), ("float64", ["--x64"])):
        out = OUT / f"{args.problem}-{dtype}"
        cmd = [sys.executable, "-m", "rodflow.cli", "compare", "--problem", args.problem,
               "--lr", str(args.lr), "--steps", str(args.steps), "--flows", "discrete,rod",
               "--out", str(out), "--overwrite", *extra]
        subprocess.run(cmd, check=True)
        m = json.loads((out / "metrics.json").read_text())
        runs[dtype] = {"command": " ".join(["rodflow", *cmd[3:]]), **{
            k: m[k] for k in ("dtype", "eos_onset_step", "eos_onset_rule", "sharpness_initial",
                              "threshold")}, "rod": m["flows"]["rod"]}
    x = {d: _initial(args.problem, d == "float64") for d in runs}
    on32, on64 = runs["float32"]["eos_onset_step"], runs["float64"]["eos_onset_step"]
    result = {
        "command": "python " + " ".join(sys.argv), "jax": jax.__version__, "machine": platform.machine(),
        "problem": args.problem, "lr": args.lr, "steps": args.steps,
        "init_max_abs_diff": float(np.max(np.abs(x["float32"].astype(np.float64) - x["float64"]))),
        "onset_rel_diff": (None if on32 is None or on64 is None
                           else abs(on32 - on64) / max(on32, on64)),
        "runs": runs,
    }
    write_json(Path("benchmarks/results/dtype_independence.json"), result)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    for d, r in runs.items():
        print(d, r["eos_onset_step"], r["eos_onset_rule"], r["sharpness_initial"])


if __name__ == "__main__":
    main()
