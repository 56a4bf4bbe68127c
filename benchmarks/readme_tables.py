"""The result tables of the README and of the docs' benchmark pages, printed from the committed
JSON files (so every number in them traces to a field of a file that records its command).

    python benchmarks/readme_tables.py [--which NAME,...]            # print the tables
    python benchmarks/readme_tables.py --write README.md docs/benchmarks/*.md

With `--write FILE...`, each table replaces the lines between `<!-- table:NAME -->` and
`<!-- /table:NAME -->` in each file. Without `--which`, every table whose markers a file holds is
written into it (a file without markers is left alone); with `--which`, each named table must
have its markers in every file given. Where the tables live: `flagship` in README.md,
`eos_tracking` in docs/benchmarks/networks.md, `flows_cost_accuracy` in
docs/benchmarks/central-flow.md, `optimizers_acceptance` and `optimizers_runs` in
docs/benchmarks/optimizers.md, `optimizers_central` in README.md and
docs/benchmarks/optimizers.md, `rod_timing` and `noise_floor` in docs/benchmarks/rod-order.md,
`scale` in README.md and docs/guides/scaling.md, `cost`, `cost_gpu`, `cost_cmdbuf_gpu`,
`cost_krylov`, `central_settings`, `compile_times` and `sharpness_estimators` in
docs/benchmarks/cost.md,
`sweep_gpu` and `sweep_split` in docs/benchmarks/sweeps.md.

Each cell is `mean +- std` over the initialisation seeds at which GD reached EoS within the run
(sample standard deviation; one value without `+-` when only one seed did).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _pm(s, digits=3) -> str:
    if s is None or s.get("mean") is None:
        return "-"
    mean, std = s["mean"], s["std"]
    if s["n"] == 1:
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} +- {std:.2g}"


def eos_tracking() -> str:
    d = json.loads((RESULTS / "eos_tracking.json").read_text())
    rows = ["| problem (dtype, steps) | params | lr | seeds at EoS | EoS onset | stable d (EoS) | "
            "rod d (EoS) | rod / stable | stable loss err (EoS) | rod loss err (EoS) | "
            "rod smoothed loss err | rod catapult lag (steps) |", "|" + "---|" * 12]
    for name, e in d["runs"].items():
        sp = sp_st = e["spread"]
        st, rod, run = sp_st["stable"], sp["rod"], sp["run"]
        rows.append(
            f"| {name} (f{e['dtype'][5:]}, {e['steps']}) | {e['n_params']} | {e['lr']:g} | "
            f"{run['eos_onset_step']['n']} of {len(e['seeds'])} | {_pm(run['eos_onset_step'])} | "
            f"{_pm(st['rel_dist_mean_eos'])} | {_pm(rod['rel_dist_mean_eos'])} | "
            f"{_pm(run['rod_over_stable_eos'], 2)} | {_pm(st['loss_err_eos'])} | "
            f"{_pm(rod['loss_err_eos'])} | {_pm(rod['loss_err_smooth_eos'])} | "
            f"{_pm(rod['catapult_lag_steps'])} |")
    return "\n".join(rows)


def flagship() -> str:
    """The README's table: GD against gradient flow and Rod Flow on the real networks
    (`eos_tracking.json`), mean +- std over seeds."""
    d = json.loads((RESULTS / "eos_tracking.json").read_text())
    rows = ["| problem (dtype, steps) | lr | seeds at EoS | gradient flow d | Rod Flow d | "
            "Rod / gradient flow | gradient flow loss err | Rod Flow loss err |", "|" + "---|" * 8]
    for name, e in d["runs"].items():
        sp = e["spread"]
        st, rod, run = sp["stable"], sp["rod"], sp["run"]
        rows.append(
            f"| {name} (f{e['dtype'][5:]}, {e['steps']}) | {e['lr']:g} | "
            f"{run['eos_onset_step']['n']} of {len(e['seeds'])} | {_pm(st['rel_dist_mean_eos'])} | "
            f"{_pm(rod['rel_dist_mean_eos'])} | {_pm(run['rod_over_stable_eos'], 2)} | "
            f"{_pm(st['loss_err_eos'])} | {_pm(rod['loss_err_eos'])} |")
    return "\n".join(rows)


def flows_cost_accuracy() -> str:
    d = json.loads((RESULTS / "flows_cost_accuracy.json").read_text())
    rows = ["| problem (params, dtype, steps) | seeds at EoS | EoS onset | stable d | central d | rod d | "
            "rod, Taylor d | rod / central (d) | central loss err | rod loss err | central ms | rod ms | "
            "rod / central (wall) |", "|" + "---|" * 13]
    for name, e in d["problems"].items():
        sp = e["spread"]
        ms = {f: (None if sp[f]["wall_s_per_unit_time"]["mean"] is None else
                  {**sp[f]["wall_s_per_unit_time"],
                   "mean": 1e3 * sp[f]["wall_s_per_unit_time"]["mean"],
                   "std": 1e3 * sp[f]["wall_s_per_unit_time"]["std"]}) for f in ("central", "rod")}
        rows.append(
            f"| {name} ({e['dim']}, f{e['dtype'][5:]}, {e['steps']}) | "
            f"{sp['run']['eos_onset_step']['n']} of {len(e['seeds'])} | {_pm(sp['run']['eos_onset_step'])} | "
            + " | ".join(_pm(sp[f]["rel_dist_mean_eos"]) for f in ("stable", "central", "rod", "rod_taylor"))
            + f" | {_pm(sp['checks'].get('rod_over_central_rel_dist'), 2)} | "
            f"{_pm(sp['central']['loss_err_eos'])} | {_pm(sp['rod']['loss_err_eos'])} | "
            f"{_pm(ms['central'])} | {_pm(ms['rod'])} | "
            f"{_pm(sp['checks'].get('rod_over_central_wall'), 2)} |")
    return "\n".join(rows)


def _g(v, digits=3):
    return "-" if v is None else (f"{v:.{digits}g}" if isinstance(v, float) else str(v))


def rod_timing() -> str:
    d = json.loads((RESULTS / "rod_timing.json").read_text())
    flows = ("stable", "central", "rod", "rod_map", "rod_order2")
    rows = ["| run (start) | flows start | GD's first peaks | flow | d (EoS) | loss err (EoS) | "
            "smoothed loss err | catapult lag | first peaks, flow - GD | grad evals |", "|" + "---|" * 10]
    for key, e in d["runs"].items():
        name = key.replace("/start=", " (start ").replace("/lr=", ", lr ") + ")"
        for i, f in enumerate(f for f in flows if f in e["flows"]):
            m = e["flows"][f]
            head = (f"| {name} | {e['start_step']} | {', '.join(map(str, e['discrete_peaks'][:4]))} "
                    if i == 0 else "| | | ")
            stop = m.get("solver_stopped_at")
            label = f if stop is None else f"{f} (solver stopped at step {stop})"
            rows.append(head + f"| {label} | {_g(m['rel_dist_mean_eos'])} | {_g(m['loss_err_eos'])} | "
                        f"{_g(m['loss_err_smooth_eos'])} | {_g(m['catapult_lag_steps'])} | "
                        f"{', '.join(map(str, m['peak_offsets'])) or '-'} | {_g(m['grad_evals'])} |")
    return "\n".join(rows)


def noise_floor() -> str:
    d = json.loads((RESULTS / "noise_floor.json").read_text())
    rows = ["| run (params) | GD's oscillation / eps\\|c\\| (quiet, median) | GD's oscillation / sigma "
            "(quiet, median) | GD's first peaks | flow | floor | d (EoS) | loss err (EoS) | catapult lag | "
            "first peaks, flow - GD |", "|" + "---|" * 10]
    flows = (("stable", "gradient flow", "-"), ("central", "Central Flow", "-"),
             ("rod", "rod, order 1", "eps"), ("rod_rounding", "rod, order 1", "rounding"),
             ("rod_map", "rod, order 1, map growth", "eps"),
             ("rod_map_rounding", "rod, order 1, map growth", "rounding"),
             ("rod_order2", "rod, order 2", "eps"), ("rod_order2_rounding", "rod, order 2", "rounding"))
    for key, e in d["runs"].items():
        n = e["gd_noise"]
        med = {k: (n[k] or {}).get("0.5") for k in ("osc_over_eps_c", "osc_over_sigma")}
        for i, (f, label, floor) in enumerate(x for x in flows if x[0] in e["flows"]):
            m = e["flows"][f]
            head = (f"| {key.replace('/lr=', ', lr ')} ({e['n_params']}) | {_g(med['osc_over_eps_c'], 2)} | "
                    f"{_g(med['osc_over_sigma'], 2)} | {', '.join(map(str, e['discrete_peaks'][:4]))} "
                    if i == 0 else "| | | | ")
            rows.append(head + f"| {label} | {floor} | {_g(m['rel_dist_mean_eos'])} | "
                        f"{_g(m['loss_err_eos'])} | {_g(m['catapult_lag_steps'])} | "
                        f"{', '.join(map(str, m['peak_offsets'])) or '-'} |")
    return "\n".join(rows)


def cost(name: str = "cost.json") -> str:
    d = json.loads((RESULTS / name).read_text())
    rows = ["| problem (lr, dtype, params) | GD ms/step | Rod Flow / GD | "
            "discrete run (sharpness every 10) / GD | same, eigensolver capped at 3 iterations / GD "
            "(max rel. sharpness diff) | gradient flow / GD | Central Flow / GD (steps) | "
            "compile s (discrete, stable, rod, central) | rod d (EoS) | stable d (EoS) | "
            "central d (EoS) | load before |",
            "|" + "---|" * 12]
    for key, e in d["runs"].items():
        c = e["compile_s"]
        comp = ", ".join(_g(c.get(k), 2) for k in ("discrete", "stable", "rod", "central"))
        capped = "-"
        if "sharpness_over_gd_eig_iters_3" in e:
            capped = (f"{_g(e['sharpness_over_gd_eig_iters_3'])} "
                      f"({_g(e['sharpness_rel_diff_eig_iters_3']['max'], 2)})")
        central = "-"
        if e.get("central_over_gd") is not None:
            central = f"{_g(e['central_over_gd'])} ({e['central_steps']})"
        acc = e["accuracy"]
        rows.append(f"| {key.replace('/', ', ')} ({e['dim']}) | {_g(e['gd_ms'])} | "
                    f"{_g(e['rod_over_gd'])} | {_g(e['sharpness_over_gd'])} | {capped} | "
                    f"{_g(e.get('stable_over_gd'))} | {central} | {comp} | "
                    f"{_g(acc['rod']['rel_dist_mean_eos'])} | "
                    f"{_g(acc.get('stable', {}).get('rel_dist_mean_eos'))} | "
                    f"{_g(acc.get('central', {}).get('rel_dist_mean_eos'))} | "
                    f"{_g(e['load_avg_1min_before'], 2)} |")
    return "\n".join(rows)


def cost_krylov() -> str:
    d = json.loads((RESULTS / "cost.json").read_text())
    rows = ["| problem (lr, dtype, steps) | eigensolver | HVPs per measurement | "
            "discrete run / GD, default | "
            "same with this eigensolver / GD | rel. diff. from the default's sharpness: median | 90th pct | "
            "max | max from the EoS onset | `while`, `conditional` in one block | load before |",
            "|" + "---|" * 11]
    for key, e in d["runs"].items():
        for name, a in sorted(e.get("eig_alt", {}).items(), key=lambda kv: kv[1]["iters"]):
            r, hlo = a["rel_diff_from_default"], a["hlo_control_flow_one_block_discrete"]
            eos = r["eos"] or {}
            hvps = a["iters"] if a["method"] == "krylov" else "-"  # (k = 1)
            rows.append(f"| {key.replace('/', ', ')}, {a['steps']} | {name} | {hvps} | "
                        f"{_g(a['sharpness_over_gd'])} | {_g(a['sharpness_over_gd_alt'])} | "
                        f"{_g(r['all']['median'], 2)} | {_g(r['all']['p90'], 2)} | "
                        f"{_g(r['all']['max'], 2)} | "
                        f"{_g(eos.get('max'), 2)} | {hlo['while']}, {hlo['conditional']} | "
                        f"{_g(a['load_avg_1min_before'], 2)} |")
    return "\n".join(rows)


def central_settings() -> str:
    d = json.loads((RESULTS / "central_settings.json").read_text())
    rows = ["| problem (seed, dtype, steps, EoS onset) | flow | ms per unit time | / default Central Flow | "
            "compile s | grad evals per unit time | d (EoS) | change of d | loss err (EoS) | "
            "most critical eigenvalues (of k) | load before |",
            "|" + "---|" * 11]
    for key, e in d["runs"].items():
        for i, (label, f) in enumerate(e["flows"].items()):
            head = f"| {key.replace('/', ', ')}, {e['eos_onset_step']} " if i == 0 else "| "
            change = "-" if f["d_change"] is None else f"{100 * f['d_change']:+.1f}%"
            load = _g(e["load_avg_1min_before"], 2) if i == 0 else ""
            crit = f"{f['n_critical_max']:.0f} (of {f['k']})" if "k" in f else "-"
            rows.append(head + f"| {label} | {_g(f['ms_per_unit_time'])} | {_g(f['over_default_central'])} | "
                        f"{_g(f['compile_s'], 2)} | {_g(f['grad_evals_per_unit_time'])} | "
                        f"{_g(f['rel_dist_mean_eos'])} | {change} | {_g(f['loss_err_eos'])} | {crit} | "
                        f"{load} |")
    return "\n".join(rows)


def compile_times() -> str:
    d = json.loads((RESULTS / "compile_times.json").read_text())
    rows = ["| problem, dtype (steps) | rodflow commit | fresh processes | discrete | gradient flow "
            "| Rod Flow | Central Flow | load before |", "|---|---|---|---|---|---|---|---|"]
    for e in d["entries"].values():
        commit = e["rodflow_commit"][:7] + (" (modified)" if e["rodflow_modified"] else "")
        for dtype, r in e["dtypes"].items():
            cells = " | ".join(f"{_g(r['median_s'][k])} ({_g(r['max_s'][k])})"
                               for k in ("discrete", "stable", "rod", "central"))
            loads = ", ".join(_g(x["load_avg_1min_before"], 2) for x in r["runs"])
            rows.append(f"| {e['problem']}, {dtype} ({e['steps']}) | {commit} | {len(r['runs'])} | {cells} | "
                        f"{loads} |")
    return "\n".join(rows)


def cost_gpu() -> str:
    return cost("cost_gpu.json")


def cost_cmdbuf_gpu() -> str:
    return cost("cost_cmdbuf_gpu.json")


def sweep_gpu() -> str:
    d = json.loads((RESULTS / "sweep_throughput_gpu.json").read_text())
    rows = ["| variant | end to end s | compile s | run s | run s per lr | lrs at EoS | device peak MB |",
            "|---|---|---|---|---|---|---|"]
    labels = (("single", "one `rodflow.compare`"),
              ("sweep", f"one `rodflow.sweep`, {d['config']['lrs']} lrs"))
    for key, label in labels:
        e = d[key]
        n = 1 if key == "single" else d["config"]["lrs"]
        rows.append(f"| {label} | {_g(e['end_to_end_s'])} | {_g(e['compile_s'])} | {_g(e['run_s'])} | "
                    f"{_g(e['run_s'] / n)} | {e['n_eos']} of {n} | {_g(e['device_peak_mb'])} |")
    return "\n".join(rows)


def sweep_split() -> str:
    rows = ["| eigensolver | rod | run kind | 16 sequential `compare` run s | one `sweep` run s | "
            "sweep / sequential |", "|---|---|---|---|---|---|"]
    for name in ("sweep_split.json", "sweep_split_krylov.json"):
        if not (RESULTS / name).exists():
            continue
        d = json.loads((RESULTS / name).read_text())
        eig = d["config"].get("eig_method") or "default (LOBPCG)"
        for key, label in (("default_rod", "default"), ("rod_rho_switch_0", "`rho_switch=0` (no switch)")):
            e = d[key]
            for kind, ratio in e["sweep_over_sequential_run_s"].items():
                seq, sweep = (e[v]["run_s_by_kind"][kind] for v in ("sequential_compare", "sweep"))
                rows.append(f"| {eig} | {label} | {kind} | {_g(seq)} | {_g(sweep)} | {_g(ratio)} |")
    return "\n".join(rows)


def sharpness_estimators() -> str:
    d = json.loads((RESULTS / "sharpness_estimators.json").read_text())
    rows = [f"| estimator ({d['problem']}, {d['dtype']}, lr {d['lr']:g}, every {d['every']} steps) | "
            "HVPs per measurement | rel. error median | 90th pct | max | max from the EoS onset |",
            "|" + "---|" * 6]
    for name, e in d["estimators"].items():
        eos = e["eos"] or {}
        rows.append(f"| {name} | {_g(e['hvps_mean'], 3)} | {_g(e['all']['median'], 2)} | "
                    f"{_g(e['all']['p90'], 2)} | {_g(e['all']['max'], 2)} | {_g(eos.get('max'), 2)} |")
    return "\n".join(rows)


def growth_guard() -> str:
    from rodflow.flows._rod import GROWTH_GUARD

    def where(c):
        keys = ("seed", "steps", "lr", "start", "every")
        out = ", ".join(f"{k} {c[k]}" for k in keys if c.get(k) is not None)
        if c.get("opt"):
            opt = c["opt"] + "".join(f"@{k}={v}" for k, v in c.get("opt_kw", {}).items())
            out = f"{opt}{' (warm)' if c.get('warm') else ''}, {out}"
        if c.get("lrs"):
            out += f", sweep of {len(c['lrs'])} lrs up to {max(c['lrs']):g}"
        if c.get("schedule"):
            out += ", lr schedule"
        return out

    rows = ["| runs (configurations file) | problem | configurations | largest `-2 - q` | where | "
            f"above {GROWTH_GUARD:g} (the guard acts) |", "|---|---|---|---|---|---|"]
    for name, label in (("f32", "float32"), ("x64", "float64"), ("opt", "optimisers with state, float64"),
                        ("gpu_f32", "float32, as the GPU rows"), ("gpu_x64", "float64, as the GPU rows")):
        lines = (RESULTS / f"growth_guard_{name}.jsonl").read_text().splitlines()
        by_problem: dict[str, list] = {}
        for line in lines:
            e = json.loads(line)
            by_problem.setdefault(e["config"]["problem"], []).append(e)
        for problem, es in by_problem.items():
            top = max(es, key=lambda e: e["max_linear_rate"])
            above = "; ".join(f"{where(e['config'])}: {_g(e['max_linear_rate'], 3)}" for e in es
                              if e["max_linear_rate"] > GROWTH_GUARD) or "none"
            rate, at = _g(top["max_linear_rate"], 3), where(top["config"])
            rows.append(f"| {label} ({name}.json) | {problem} | {len(es)} | {rate} | {at} | {above} |")
    return "\n".join(rows)


def _optimizers():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import optimizers

    return optimizers, json.loads((RESULTS / "optimizers.json").read_text())


def optimizers_acceptance() -> str:
    mod, results = _optimizers()
    return mod.acceptance_table(results)


def optimizers_runs() -> str:
    mod, results = _optimizers()
    return mod.summary(results)


def optimizers_central() -> str:
    mod, results = _optimizers()
    return mod.central_table(results)


def schedule() -> str:
    """docs/guides/schedules.md: GD and the flows under a linear warm-up (`schedule.json`)."""
    d = json.loads((RESULTS / "schedule.json").read_text())
    gd = d["gd_threshold_tracking"]
    sch = d["schedule"]
    after, during = gd.get("after_warmup") or {}, gd.get("during_warmup") or {}
    names = [f for f in d["per_flow"] if f != "discrete"]
    rows = ["| problem (dtype, steps) | lr schedule | EoS onset | GD S / (2/lr) after warm-up (median, "
            "median dev) | during warm-up | " + " | ".join(f"{f} d (EoS)" for f in names)
            + " | rod / stable |", "|" + "---|" * (5 + len(d["per_flow"]))]
    flows = " | ".join(_g(v["rel_dist_mean_eos"]) for f, v in d["per_flow"].items() if f != "discrete")
    rows.append(
        f"| {d['problem']} (f{d['dtype'][5:]}, {d['steps']}) | {sch['init_value']:g} -> {sch['end_value']:g} "
        f"over {sch['transition_steps']}, then constant | {gd['eos_onset_step']} | "
        f"{_g(after.get('median_ratio'))}, {_g(after.get('median_abs_dev'), 2)} | "
        f"{_g(during.get('median_ratio'))}, {_g(during.get('median_abs_dev'), 2)} | {flows} | "
        f"{_g(d['rod_over_stable_eos'], 2)} |")
    return "\n".join(rows)


def scale() -> str:
    """README.md and docs/guides/scaling.md: compile time and memory against the number of
    examples and of data-parallel devices (`scale.json`)."""
    d = json.loads((RESULTS / "scale.json").read_text())
    rows = ["| examples | devices | compile: discrete run (s) | compile: rod (s) | gradient program "
            "(chars) | gradient compile (s) | data per device (MB) | gradient: XLA arguments + temporaries "
            "per device (MB) | process peak RSS (MB) |", "|---|---|---|---|---|---|---|---|---|"]
    seen = set()
    for r in d["by_examples"] + d["by_devices"]:
        key = (r["examples"], r["devices"])
        if key in seen or "error" in r:
            continue
        seen.add(key)
        mem = r.get("grad_memory_per_device") or {}
        xla = (mem.get("argument_size_in_bytes", 0) + mem.get("temp_size_in_bytes", 0)) / 2**20
        comp = r.get("compile_s") or {}
        c_gd, c_rod = (f"{comp[k]:.2f}" if k in comp else "not run" for k in ("discrete", "rod"))
        rows.append(f"| {r['examples']} | {r['devices']} | {c_gd} | {c_rod} | {r['grad_program_chars']} | "
                    f"{r['grad_compile_s']:.2f} | {r['data_bytes_per_device'] / 2**20:.1f} | {xla:.1f} | "
                    f"{r['max_rss_mb']:.0f} |")
    return "\n".join(rows)


TABLES = ("flagship", "eos_tracking", "flows_cost_accuracy", "rod_timing", "noise_floor",
          "optimizers_acceptance", "optimizers_runs", "optimizers_central", "cost", "cost_gpu",
          "cost_cmdbuf_gpu", "cost_krylov", "central_settings", "compile_times", "sweep_gpu", "sweep_split",
          "sharpness_estimators", "schedule", "scale", "growth_guard")


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- table:{name} -->", f"<!-- /table:{name} -->"


def write(path: Path, names: list[str] | None) -> list[str]:
    """Replace the marked tables in `path`: those in `names`, whose markers must be there, or
    (`names=None`) every table whose markers are there. Returns the names written."""
    text = path.read_text()
    if names is None:
        names = [n for n in TABLES if all(m in text for m in _markers(n))]
    for name in names:
        start, end = _markers(name)
        if start not in text or end not in text:
            raise SystemExit(f"{path} has no `{start}` ... `{end}` markers.")
        a, b = text.index(start) + len(start), text.index(end)
        text = text[:a] + "\n" + globals()[name]() + "\n" + text[b:]
    if names:
        path.write_text(text)
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--which", default=None,
                    help=f"comma-separated tables (default: all when printing; with --write, those marked "
                         f"in each file): {', '.join(TABLES)}")
    ap.add_argument("--write", type=Path, nargs="+", default=None, metavar="FILE",
                    help="replace the marked tables in these files")
    args = ap.parse_args(argv)
    names = None if args.which is None else [n for n in args.which.split(",") if n]
    unknown = sorted(set(names or ()) - set(TABLES))
    if unknown:
        raise SystemExit(f"unknown table(s) {', '.join(unknown)}; choose from {', '.join(TABLES)}.")
    if args.write is None:
        for name in names or TABLES:
            print(f"### {name}\n\n{globals()[name]()}\n")
        return
    for path in args.write:
        written = write(path, names)
        print(f"wrote {', '.join(written)} into {path}" if written
              else f"{path}: no table markers, left alone")


if __name__ == "__main__":
    main()
