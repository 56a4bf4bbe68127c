"""Catapult timing (issue 15): when do the flows' loss spikes come, against GD's?

    python benchmarks/rod_timing.py [--problem mlp-digits] [--lr 0.07] [--steps 1500] [--x64]
        [--central] [--out benchmarks/results/rod_timing.json]

One `rodflow.compare` run per start rule (`start_step` 0, and `"auto"`: after a catapult from
initialisation), every flow on the same run: gradient flow, Rod Flow (`order=1`, the paper's,
Euler dt 0.5), Rod Flow `order=1` with the rod map's growth (`growth="map"`, Euler dt 0.5), Rod
Flow `order=2` (Tsit5, rtol 1e-6) and, with `--central`, Central Flow.
Reported per flow: `rel_dist_mean_eos`, the loss metrics of `_metrics.py` (`loss_err_eos`,
`loss_err_smooth_eos`, `catapult_lag_steps`), and the loss peaks: local maxima of the loss (GD:
its pair mean `(L(x_k) + L(x_{k+1}))/2`; a flow: its predicted loss) after a centred 5-step mean,
after the EoS onset, with a prominence of at least 10% of GD's loss standard deviation over EoS
and at least `LOSS_SMOOTH_WINDOW` steps apart (scipy.signal.find_peaks). `peak_offsets`: the
flow's k-th peak minus GD's k-th peak (in steps), for the first four (in order, not nearest: a flow
one cycle ahead must not be paired with GD's next spike).
The JSON holds the command; results are added under `PROBLEM/lr=LR/DTYPE/start=START` keys and a run already
there is kept unless `--fresh`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax


def _peaks(step, loss, onset, prominence):
    import numpy as np
    from scipy.signal import find_peaks

    from rodflow._metrics import LOSS_SMOOTH_WINDOW

    loss = np.asarray(loss, float)
    ok = np.isfinite(loss)
    sm = np.convolve(np.where(ok, loss, np.nan), np.ones(5) / 5, mode="same")
    idx, _ = find_peaks(np.nan_to_num(sm, nan=-np.inf), prominence=prominence, distance=LOSS_SMOOTH_WINDOW)
    return [int(step[i]) for i in idx if step[i] >= onset]


def timing(r, flows):
    """`{"flows": {name: metrics, peaks, peak_offsets}, "discrete_peaks": [...]}` of a
    `rodflow.compare` result: each flow's tracking and loss metrics, its loss peaks and the
    offsets of its first four from GD's (peaks after the EoS onset, prominence 10% of GD's loss
    standard deviation over EoS; none when GD never reaches EoS)."""
    import numpy as np

    m = r.metrics
    onset = m["eos_onset_step"]  # None: GD never reached EoS, and no peak is a catapult
    gd = r.series["discrete"]
    gd_loss = 0.5 * (gd["loss"] + gd["loss_next"])
    if onset is not None:
        prominence = 0.1 * float(np.nanstd(gd_loss[gd["step"] >= onset]))

    def peaks_of(step, loss):
        return [] if onset is None else _peaks(step, loss, onset, prominence)

    discrete = peaks_of(gd["step"], gd_loss)
    out = {"flows": {}, "discrete_peaks": discrete}
    for f in flows:
        fm = m["flows"][f]
        peaks = peaks_of(r.series[f]["step"], r.series[f]["loss"])
        out["flows"][f] = {k: fm.get(k) for k in (
            "rel_dist_mean_eos", "rel_dist_max_eos", "loss_err_eos", "loss_err_smooth_eos",
            "catapult_lag_steps", "catapult_corr", "catapult_amplitude", "sharpness_mean_eos",
            "wall_s", "grad_evals", "diverged_at", "solver_stopped_at", "solver_result")}
        out["flows"][f]["peaks"] = peaks
        out["flows"][f]["peak_offsets"] = [p - g for p, g in zip(peaks[:4], discrete[:4])]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="mlp-digits")
    ap.add_argument("--lr", type=float, default=0.07)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--central", action="store_true", help="add Central Flow (costly on networks)")
    ap.add_argument("--starts", default="0,auto")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/rod_timing.json"))
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import rodflow
    from rodflow._io import write_json

    results = json.loads(args.out.read_text()) if args.out.exists() and not args.fresh else {"runs": {}}
    problem = rodflow.problems.get(args.problem)
    flows = {"stable": rodflow.StableFlow(), "rod": rodflow.RodFlow(),
             "rod_map": rodflow.RodFlow(growth="map"), "rod_order2": rodflow.RodFlow(order=2)}
    if args.central:
        flows["central"] = rodflow.CentralFlow()
    for start in args.starts.split(","):
        start = start if start == "auto" else int(start)
        key = f"{args.problem}/lr={args.lr:g}/{'f64' if args.x64 else 'f32'}/start={start}"
        if key in results["runs"]:
            print(f"{key}: already in {args.out} (--fresh to redo)")
            continue
        t0 = time.perf_counter()
        r = rodflow.compare(problem, lr=args.lr, steps=args.steps, flows=flows, sharpness_every=10,
                            start_step=start, figure=False)
        m = r.metrics
        entry = {"command": "python " + " ".join(sys.argv), "problem": args.problem, "lr": args.lr,
                 "steps": args.steps, "dtype": m["dtype"], "start_step": m["start_step"],
                 "start_step_auto": m.get("start_step_auto"), "eos_onset_step": m["eos_onset_step"],
                 "eos_onset_rule": m["eos_onset_rule"], "sharpness_initial": m["sharpness_initial"],
                 "threshold": m["threshold"], "total_s": time.perf_counter() - t0}
        entry.update(timing(r, flows))
        results["runs"][key] = entry
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, results)
        print(f"== {key} ({entry['total_s']:.0f} s)\n{r.table()}\nGD peaks {entry['discrete_peaks'][:8]}")
        for f, e in entry["flows"].items():
            print(f"  {f:<11} peaks {e['peaks'][:8]}  offsets {e['peak_offsets']}")


if __name__ == "__main__":
    main()
