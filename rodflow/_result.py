"""Results: the host-side series and metrics of one grid point ([`Comparison`][]) and of a grid
([`SweepResult`][]), their tables and files."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _io
from ._maps import AbstractMap
from ._metrics import (
    LOSS_SMOOTH_WINDOW,
    discrete_metrics,
    eos_onset_rule,
    first_nonfinite,
    flow_metrics,
    relative_distance,
)
from ._problem import Problem
from ._settings import Settings
from ._spectrum import resolve_method
from .flows import AbstractFlow


@dataclasses.dataclass
class Comparison:
    """The result of [`rodflow.compare`][].

    - `metrics`: the dict written to `metrics.json` (see README for the keys).
    - `series`: per run (`"discrete"`, `"stable"`, `"rod"`, ...) a dict of numpy arrays over
      steps `k = 0..N`: `step`, `loss` (GD's loss, or the flow's predicted GD loss),
      `rel_dist` (flows), `sharpness_step` and `sharpness`, and extras such as the rod's `rho`;
      with a learning-rate schedule the discrete run's also hold `lr` and `threshold` per step.
    - `final`: per run, the parameters (as a pytree like `params0`) at step `N`: GD's iterate
      `x_N`, the flows' centres. From [`rodflow.load`][]: flat numpy vectors instead
      (`problem.unravel(jnp.asarray(v))` rebuilds the pytree).
    - `snapshots`: per run, `(steps, flat parameter vectors)` every `save_every` steps.

    `save(out)` writes `metrics.json`, `series.npz`, `params.npz` (the final parameters and the
    snapshots, flat) and `compare.png`; [`rodflow.load`][] reads them back.
    """

    problem: str
    lr: float
    steps: int
    metrics: dict[str, Any]
    series: dict[str, dict[str, np.ndarray]]
    final: dict[str, Any]
    snapshots: dict[str, tuple[np.ndarray, np.ndarray]]

    def table(self) -> str:
        return format_table(self.metrics)

    def diverged(self) -> list[str]:
        """One line per run that became non-finite, with its step."""
        return diverged(self.metrics["flows"])

    def save(self, out: str | Path, *, figure: bool = True) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _io.write_json(out / "metrics.json", self.metrics)
        _io.write_series(out / "series.npz", self.series)
        _io.write_series(out / "params.npz", _params_arrays(self))
        if figure:
            from .plot import plot_comparison

            plot_comparison(self, out / "compare.png")
        return out


@dataclasses.dataclass
class SweepResult:
    """The result of [`rodflow.sweep`][].

    - `metrics`: the dict written to `sweep.json` (`problem`, `steps`, `lrs`, `seeds`, `devices`,
      `compile_s`, `run_s`, and `runs`: one entry per grid point with `lr`, `seed`,
      `eos_onset_step` and the per-flow metrics of `metrics.json`).
    - `runs`: one [`rodflow.Comparison`][] per grid point (series, final parameters), in the
      order of `metrics["runs"]` (seeds outer, step sizes inner).

    `save(out)` writes `sweep.json` (the metrics), `runs.json` (each grid point's own metrics
    but its `flows`, which are in `sweep.json`), `series.npz` and `params.npz` (each grid point's
    series and flat parameters, entries prefixed by its index: `"3/rod/loss"`) and `sweep.png`;
    [`rodflow.load`][] reads them back.
    """

    metrics: dict[str, Any]
    runs: list[Comparison]

    def table(self) -> str:
        flows = [f for f in self.metrics["runs"][0]["flows"] if f != "discrete"]
        head = f"{'lr':>10} {'seed':>5} {'onset':>6} {'GD loss':>11}" + "".join(
            f"{'d EoS ' + f:>16}" for f in flows) + f"{'rod S/(2/lr)':>14}"
        lines = [head, "-" * len(head)]
        for run in self.metrics["runs"]:
            fl = run["flows"]
            row = f"{run['lr']:>10.4g} {str(run['seed']):>5} {str(run['eos_onset_step']):>6} "
            row += f"{_fmt(fl['discrete']['final_loss']):>11}"
            row += "".join(f"{_fmt(fl[f].get('rel_dist_mean_eos')):>16}" for f in flows)
            rod = fl.get("rod", {}).get("sharpness_mean_eos")
            row += f"{_fmt(None if rod is None else rod / fl['discrete']['threshold']):>14}"
            lines.append(row)
        lines.append(f"compile {self.metrics['compile_s']:.1f} s, run {self.metrics['run_s']:.1f} s "
                     f"on {self.metrics['devices']} device(s)")
        lines += [f"WARNING: {msg}" for msg in self.diverged()]
        return "\n".join(lines)

    def diverged(self) -> list[str]:
        """One line per grid point and run that became non-finite, with its step."""
        return [f"lr={run['lr']:g} seed={run['seed']}: {msg}" for run in self.metrics["runs"]
                for msg in diverged(run["flows"])]

    def save(self, out: str | Path, *, figure: bool = True) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _io.write_json(out / "sweep.json", self.metrics)
        _io.write_json(out / "runs.json", [{k: v for k, v in c.metrics.items() if k != "flows"}
                                           for c in self.runs])
        _io.write_series(out / "series.npz", {f"{g}/{name}": s for g, c in enumerate(self.runs)
                                              for name, s in c.series.items()})
        _io.write_series(out / "params.npz", {f"{g}/{name}": s for g, c in enumerate(self.runs)
                                              for name, s in _params_arrays(c).items()})
        if figure:
            from .plot import plot_sweep

            plot_sweep(self, out / "sweep.png")
        return out


def _flat(params) -> np.ndarray:
    """A parameter pytree as the flat vector `Problem.ravel` makes (its float leaves in tree
    order), on the host; a flat vector stays as it is."""
    leaves = jax.tree.leaves(eqx.filter(params, eqx.is_inexact_array))
    return np.concatenate([np.ravel(np.asarray(leaf)) for leaf in leaves]) if leaves else np.zeros(0)


def _params_arrays(c: Comparison) -> dict[str, dict[str, np.ndarray]]:
    """`{run: {"final": flat vector, "snapshot_steps": ..., "snapshots": ...}}` for `params.npz`."""
    out: dict[str, dict[str, np.ndarray]] = {name: {"final": _flat(p)} for name, p in c.final.items()}
    for name, (steps, snaps) in c.snapshots.items():
        out.setdefault(name, {}).update(snapshot_steps=np.asarray(steps), snapshots=np.asarray(snaps))
    return out


def load(run_dir: str | Path) -> Comparison | SweepResult:
    """Read back a run folder written by [`rodflow.compare`][] / [`rodflow.sweep`][] (with `out=`,
    or `rodflow compare/sweep --out DIR`) or by `.save(out)`.

    **Arguments:**

    - `run_dir`: the folder. It is a `compare` run if it holds `metrics.json`, a `sweep` run if it
      holds `sweep.json`.

    **Returns:**

    - For `metrics.json`: a [`rodflow.Comparison`][] from `metrics.json` and `series.npz`.
    - For `sweep.json`: a [`rodflow.SweepResult`][] from `sweep.json`, `runs.json` and
      `series.npz`, one `Comparison` per grid point.

    `metrics` is what is on disk: the JSON of the original (numpy numbers as Python numbers,
    tuples as lists, non-finite floats as `None`). `final` and `snapshots` come from
    `params.npz` as flat numpy vectors (`problem.unravel(jnp.asarray(v))` rebuilds the pytree); a
    folder without `params.npz` (written before it existed) gives empty `final` and `snapshots`.
    The figures and `checkpoint.npz` are not read.

    **Raises:** `ValueError` (one line, naming the folder or file) if the folder is missing, holds
    neither run, or a file it needs is missing or unreadable.
    """
    path = Path(run_dir)
    if not path.exists():
        raise ValueError(f"run folder {path} does not exist.")
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a run folder (one with metrics.json or sweep.json).")
    kinds = [name for name in ("metrics.json", "sweep.json") if (path / name).is_file()]
    if len(kinds) == 2:
        raise ValueError(f"{path} holds both metrics.json and sweep.json, so its series.npz belongs to "
                         "only one of them; keep one run per folder.")
    if not kinds:
        extra = (" (checkpoint.npz is there: the run did not finish; continue it with resume=True, "
                 "--resume)") if (path / "checkpoint.npz").exists() else ""
        raise ValueError(f"{path} is not a run folder: it holds neither metrics.json (rodflow.compare) "
                         f"nor sweep.json (rodflow.sweep){extra}.")
    needed = ["series.npz"] if kinds[0] == "metrics.json" else ["runs.json", "series.npz"]
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        raise ValueError(f"{path} holds {kinds[0]} but not {' or '.join(missing)}, which loading needs "
                         "(written by .save of this rodflow); run it again to write them.")
    try:
        return _load(path, kinds[0])
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} does not hold a rodflow run as this version writes it "
                         f"({type(e).__name__}: {e}); run it again.") from e


def _load(path: Path, kind: str) -> Comparison | SweepResult:
    if kind == "metrics.json":
        return _comparison(_read(path / "metrics.json"), _read(path / "series.npz"),
                           _read(path / "params.npz") if (path / "params.npz").is_file() else {})
    metrics, per_run = _read(path / "sweep.json"), _read(path / "runs.json")
    series = _by_index(path / "series.npz")
    params = _by_index(path / "params.npz") if (path / "params.npz").is_file() else {}
    n = len(metrics.get("runs", []))
    if not (len(per_run) == len(series) == n and set(series) == set(range(n))):
        raise ValueError(f"{path}: sweep.json has {n} grid points but runs.json {len(per_run)} and "
                         f"series.npz {len(series)}; the files are from different runs.")
    runs = [_comparison({**per_run[g], "flows": metrics["runs"][g]["flows"]}, series[g], params.get(g, {}))
            for g in range(n)]
    return SweepResult(metrics, runs)


def _read(file: Path):
    """A JSON file or an npz of series (`read_series`), or a one-line `ValueError` naming it."""
    try:
        if file.suffix == ".json":
            return json.loads(file.read_text())
        return _io.read_series(file)
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{file} is unreadable ({type(e).__name__}: {first}).") from e


def _by_index(file: Path) -> dict[int, dict[str, dict]]:
    """A sweep's npz, `{"g/run": d}`, as `{g: {run: d}}`."""
    out: dict[int, dict[str, dict]] = {}
    for key, d in _read(file).items():
        g, _, run = key.partition("/")
        if not (g.isdigit() and run):
            raise ValueError(f"{file} is not a sweep's file: entry {key!r} does not start with a grid "
                             "index (\"3/rod/loss\").")
        out.setdefault(int(g), {})[run] = d
    return out


def _comparison(metrics: dict, series: dict, params: dict) -> Comparison:
    final = {name: d["final"] for name, d in params.items() if "final" in d}
    snapshots = {name: (d["snapshot_steps"], d["snapshots"]) for name, d in params.items()
                 if "snapshots" in d}
    return Comparison(metrics["problem"], metrics["lr"], metrics["steps"], metrics, series, final, snapshots)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def format_table(metrics: dict) -> str:
    cols = [("rel_dist_mean_eos", "d mean EoS"), ("rel_dist_max_eos", "d max EoS"),
            ("rel_dist_mean", "d mean"), ("loss_err_eos", "loss err EoS"),
            ("loss_err_smooth_eos", "smooth err"), ("catapult_lag_steps", "lag steps"),
            ("sharpness_mean_eos", "sharp EoS"), ("final_loss", "final loss"),
            ("wall_s", "wall s"), ("grad_evals", "grad evals")]
    head = f"{'run':<10}" + "".join(f"{h:>14}" for _, h in cols)
    lines = [head, "-" * len(head)]
    for name, m in metrics["flows"].items():
        row = f"{name:<10}"
        for key, _ in cols:
            v = m.get(key)
            row += f"{'-':>14}" if v is None else (f"{v:>14d}" if isinstance(v, int) else f"{v:>14.4g}")
        lines.append(row)
    onset = metrics.get("eos_onset_step")
    rule = {"crossing_after_transient": ", after the opening transient above it",
            "above_from_start": ", above it from the start"}.get(metrics.get("eos_onset_rule"), "")
    s0 = metrics.get("sharpness_initial")
    above = (f"{metrics['threshold']:.4g}" if "lr_schedule" not in metrics
             else f"the threshold at lr(k), {metrics['threshold']:.4g} at the last step")
    lines.append(f"EoS onset (GD sharpness > {above}): "
                 f"{'never' if onset is None else f'step {onset}'}{rule}"
                 + ("" if s0 is None else f"; initial sharpness {s0:.4g}"))
    start, auto = metrics.get("start_step", 0), metrics.get("start_step_auto")
    if auto is not None:
        end = auto["opening_catapult_end"]
        lines.append(f"Flows start at step {start} (start_step auto: momentum transient "
                     f"{auto['momentum_transient']} steps; catapult from initialisation "
                     + ("none" if end == 0 else "does not settle" if end is None
                        else f"settled by step {end}")
                     + ")")
    elif not start and (metrics.get("eos_onset_rule") in ("crossing_after_transient", "above_from_start")
                        if "lr_schedule" in metrics else s0 is not None and s0 > metrics["threshold"]):
        lines.append("Note: the run starts above the threshold (a catapult from initialisation, which no "
                     "flow follows step by step); start_step='auto' (--start-step auto) starts the "
                     "flows after it.")
    lines += [f"WARNING: {msg}" for msg in diverged(metrics["flows"])]
    return "\n".join(lines)


def diverged(flows_metrics: dict) -> list[str]:
    """`"NAME became non-finite at step K"` for every run of one grid point that did, and
    `"NAME: the ODE solver stopped at step K (reason)"` for every flow whose solver gave up."""
    out = [f"{name} became non-finite at step {m['diverged_at']}" for name, m in flows_metrics.items()
           if m.get("diverged_at") is not None]
    return out + [f"{name}: the ODE solver stopped at step {m['solver_stopped_at']} ({m['solver_result']}); "
                  "its values after that step are undefined" for name, m in flows_metrics.items()
                  if m.get("solver_stopped_at") is not None]


def _concat(chunks: list[dict], g: int) -> dict[str, np.ndarray]:
    """Grid point `g` of a run kind's per-chunk records, concatenated over chunks."""
    if not chunks:
        return {}
    return {k: np.concatenate([np.asarray(c[k])[g] for c in chunks]) for k in chunks[0]}


def assemble(problem: Problem, opt_map: AbstractMap, lr: float, settings: Settings, start: int,
             flows: dict[str, AbstractFlow], run, g: int, timings: dict[str, tuple[float, float]],
             dtype, lr_series: np.ndarray | None = None, schedule: Any = None) -> Comparison:
    """Host side: the series, metrics and final parameters of grid point `g` of a
    [`GridRun`][rodflow._engine.GridRun]. With a learning-rate schedule, `lr_series` is the
    step size at every step `0..steps` (and `lr` its peak), `schedule` its description: the
    threshold is then per step, `threshold(lr(k))`, recorded in the discrete run's series
    (`lr`, `threshold`); `metrics["threshold"]` is the one at the last step."""
    steps, every, save_every = settings.steps, settings.sharpness_every, settings.save_every
    n_rec = steps + 1
    thr_series = None if lr_series is None else np.asarray(opt_map.threshold(np.asarray(lr_series)), float)
    threshold = float(opt_map.threshold(lr)) if thr_series is None else float(thr_series[-1])
    series: dict[str, dict[str, np.ndarray]] = {}
    snapshots: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    solver_results: dict[str, np.ndarray] = {}  # per block, flows only

    def run_series(name):
        s = {k: v[:n_rec] for k, v in _concat(run.records[name], g).items()}
        s["step"] = np.arange(len(s["loss"]))
        b = _concat(run.blocks[name], g)
        if "solver_result" in b:
            solver_results[name] = b["solver_result"]
        sharp = np.asarray(b["sharpness"])
        s_steps = np.arange(len(sharp)) * every
        keep = s_steps <= steps
        if save_every is not None:
            sel = keep & (s_steps % save_every == 0)
            snapshots[name] = (s_steps[sel], np.asarray(b["snapshot"])[sel])
        s["sharpness_step"] = s_steps[keep]
        s["sharpness"] = (sharp[:, 0] if sharp.ndim == 2 else sharp)[keep]
        if sharp.ndim == 2:
            s["sharpness_topk"] = sharp[keep]
        return s

    d = run_series("discrete")
    if thr_series is not None:
        d["lr"] = np.asarray(lr_series, float)[: len(d["step"])]
        d["threshold"] = thr_series[: len(d["step"])]
    onset, rule = eos_onset_rule(d["sharpness_step"], d["sharpness"],
                                 threshold if thr_series is None else thr_series[d["sharpness_step"]])
    series["discrete"] = d
    gd = {**d, "eos_onset_step": onset}
    dm = discrete_metrics(gd, threshold)
    dm.update(wall_s=timings["discrete"][0], compile_s=timings["discrete"][1],
              grad_evals=len(d["loss"]), diverged_at=first_nonfinite(d["loss"]))
    flows_m: dict[str, dict] = {"discrete": dm}
    carries = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[g]), run.carries)
    for name, flow in flows.items():
        f = run_series(name)
        f["rel_dist"] = relative_distance(f["dist"], d["disp"][: len(f["dist"])])
        _mask_before(f, start)
        m = flow_metrics(f, gd, start=start)
        n_rhs = int(carries[name].num_steps) * flow.evals_per_step()
        cost = flow.cost_per_rhs()
        m.update(wall_s=timings[name][0], compile_s=timings[name][1],
                 grad_evals=n_rhs * cost["grads"] + 2 * n_rhs * cost["hvps"], rhs_evals=n_rhs,
                 **_failure(f, solver_results[name], every, start))
        flows_m[name] = m
        series[name] = f

    final = {"discrete": problem.unravel(carries["discrete"].x_final)}
    for name, flow in flows.items():
        final[name] = problem.unravel(opt_map.params(problem, flow.centre(carries[name].y_final)))
    metrics = {
        "problem": problem.name,
        "lr": lr,
        **({} if schedule is None else {"lr_schedule": schedule}),
        "steps": steps,
        "dtype": str(np.dtype(dtype)),
        "optimizer": opt_map.name,
        "optimizer_options": map_options(opt_map),
        "threshold": threshold,
        "sharpness_kind": opt_map.sharpness_kind,
        "eos_onset_step": onset,
        "eos_onset_rule": rule,
        "sharpness_initial": dm["sharpness_initial"],
        "loss_smooth_window": LOSS_SMOOTH_WINDOW,
        "start_step": start,
        "sharpness_every": every,
        "eigensolver": {"method": settings.eig_method,
                        "resolved": resolve_method(settings.eig_method, problem.dim, settings.top_k),
                        "iters": settings.eig_iters, "top_k": settings.top_k},
        "chunk": settings.chunk_len,
        "device": str(jax.devices()[0]),
        "flows": flows_m,
    }
    return Comparison(problem.name, lr, steps, metrics, series, final, snapshots)


def _mask_before(f: dict, start: int) -> None:
    """A warm-started flow does not exist before `start_step` (its carry is the state there):
    mark what it recorded before as undefined (nan) in its series."""
    if not start:
        return
    for k, v in f.items():
        if k in ("step", "sharpness_step"):
            continue
        steps = np.asarray(f["sharpness_step"] if k.startswith("sharpness") else f["step"])
        if len(v) == len(steps):
            v = np.asarray(v, float).copy()
            v[steps < start] = np.nan
            f[k] = v


def _shifted(i, start):
    return None if i is None else i + start


def _failure(f: dict, results: np.ndarray, every: int, start: int) -> dict:
    """`diverged_at`: the first step whose value is non-finite while the ODE solver was still
    running; `solver_stopped_at` / `solver_result`: where and why the solver gave up (e.g. its
    step limit on a stiff flow), which is not a divergence of the flow itself."""
    failed = np.flatnonzero(np.asarray(results) != 0)
    failed = failed[failed * every < len(f["loss"])]  # blocks past the last step are padding
    bad = _shifted(first_nonfinite(f["loss"][start:]), start)
    if not failed.size:
        return {"diverged_at": bad}
    block_start = int(failed[0]) * every
    stopped = bad if bad is not None and bad >= block_start else block_start
    return {"diverged_at": bad if bad is not None and bad < block_start else None,
            "solver_stopped_at": stopped, "solver_result": _result_name(int(results[failed[0]]))}


def _result_name(code: int) -> str:
    import diffrax

    names = {int(item._value): name for name, item in diffrax.RESULTS._name_to_item.items()}
    return names.get(code, f"diffrax result {code}")


def map_options(opt_map: AbstractMap) -> dict:
    """The scalar hyper-parameters of a map (its fields)."""
    out = {}
    for f in dataclasses.fields(opt_map):
        v = getattr(opt_map, f.name)
        if isinstance(v, (bool, int, float, str)):
            out[f.name] = v
    return out
