"""`sweep`: the whole comparison vmapped over step sizes (and seeds), sharded over devices."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _io
from ._compare import (
    DEFAULT_FLOWS,
    Comparison,
    _assemble,
    _execute,
    _settings,
    check_positive,
    resolve_flows,
)
from ._maps import AbstractMap, GradientDescent
from ._problem import as_problem
from .flows import AbstractFlow


@dataclasses.dataclass
class SweepResult:
    """The result of [`rodflow.sweep`][].

    - `metrics`: the dict written to `sweep.json` (`problem`, `steps`, `lrs`, `seeds`, `devices`,
      `compile_s`, `run_s`, and `runs`: one entry per grid point with `lr`, `seed`,
      `eos_onset_step` and the per-flow metrics of `metrics.json`).
    - `runs`: one [`rodflow.Comparison`][] per grid point (series, final parameters), in the
      order of `metrics["runs"]` (seeds outer, step sizes inner).
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
        return "\n".join(lines)

    def save(self, out: str | Path, *, figure: bool = True) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _io.write_json(out / "sweep.json", self.metrics)
        if figure:
            from .plot import plot_sweep

            plot_sweep(self, out / "sweep.png")
        return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def parse_lr_range(text: str) -> list[float]:
    """`"start:stop:count"` -> `count` step sizes evenly spaced from start to stop inclusive."""
    try:
        start, stop, count = text.split(":")
        start, stop, count = float(start), float(stop), int(count)
    except ValueError as e:
        raise ValueError(f"`--lr-range` must look like start:stop:count (e.g. 0.02:0.1:16), "
                         f"got {text!r}.") from e
    if count < 1:
        raise ValueError(f"`--lr-range` count must be >= 1, got {count}.")
    return np.linspace(start, stop, count).tolist()


def _grid_sharding(n_devices: int):
    if n_devices <= 1:
        return None
    mesh = Mesh(np.asarray(jax.devices()[:n_devices]), ("grid",))
    return NamedSharding(mesh, PartitionSpec("grid"))


def sweep(
    loss: Any,
    params: Any = None,
    *,
    lrs: Sequence[float],
    seeds: Sequence[int] | None = None,
    steps: int,
    flows: Sequence[str | AbstractFlow] | Mapping[str, AbstractFlow] = DEFAULT_FLOWS,
    optimizer: AbstractMap | None = None,
    sharpness_every: int = 10,
    top_k: int = 1,
    eig_method: str = "auto",
    eig_iters: int = 40,
    chunk: int = 500,
    save_every: int | None = None,
    start_step: int = 0,
    devices: int | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    figure: bool = True,
) -> SweepResult:
    """[`rodflow.compare`][] over a grid of step sizes (and initialisation seeds) as ONE
    compiled, vmapped program per run kind, sharded over devices.

    **Arguments** (as for `compare`, plus):

    - `lrs`: the step sizes.
    - `seeds`: initialisation seeds; needs a problem with `init(key)` (built-in networks have
      one). `None` uses `params` (or the problem's `params0`) for every step size.
    - `devices`: how many of `jax.devices()` to shard the grid over (default: all). The grid is
      padded (by repeating its last point) to a multiple of the device count, and the padding is
      dropped from the results.

    The whole grid is traced and compiled once per run kind (the discrete run and each flow),
    whatever its size; `lr` and the initial parameters are traced. Only per-step scalars, the
    sharpness and optional snapshots leave the devices.
    """
    problem = as_problem(loss, params)
    lrs = [float(v) for v in np.atleast_1d(np.asarray(lrs, dtype=float))]
    if not lrs:
        raise ValueError("`lrs` is empty; give at least one step size.")
    for v in lrs:
        check_positive("lrs", v)
    cfg = _settings(problem, steps, sharpness_every, chunk, top_k, eig_method, eig_iters, save_every,
                    start_step)
    flow_objs = resolve_flows(flows)
    opt_map = optimizer if optimizer is not None else GradientDescent()
    dtype = problem.dtype

    if seeds is None:
        seed_list: list[int | None] = [None]
        x0_per_seed = [problem.x0]
    else:
        seed_list = [int(s) for s in seeds]
        if problem.init is None:
            raise ValueError(f"`seeds` needs a problem with an `init(key)` function; {problem.name!r} "
                             "has none. Pass `seeds=None`, or build a rodflow.Problem with `init=`.")
        x0_per_seed = [problem.ravel(problem.init(jr.PRNGKey(s))) for s in seed_list]
    grid = [(lr, s) for s in seed_list for lr in lrs]
    x0_index = [i for i in range(len(seed_list)) for _ in lrs]

    n_dev = len(jax.devices()) if devices is None else int(devices)
    if not 1 <= n_dev <= len(jax.devices()):
        raise ValueError(f"`devices` must be between 1 and {len(jax.devices())}, got {devices}.")
    G = len(grid)
    G_pad = -(-G // n_dev) * n_dev
    pad = [G - 1] * (G_pad - G)
    lr_arr = jnp.asarray([grid[i][0] for i in list(range(G)) + pad], dtype)
    x0_arr = jnp.stack([x0_per_seed[x0_index[i]] for i in list(range(G)) + pad])
    sharding = _grid_sharding(n_dev)
    place = (lambda tree: jax.device_put(tree, sharding)) if sharding is not None else (lambda t: t)
    lr_arr, x0_arr = place(lr_arr), place(x0_arr)

    fingerprint = _io.fingerprint(problem=problem.name, dim=problem.dim, lrs=lrs, seeds=seed_list,
                                  flows=list(flow_objs), dtype=str(dtype), devices=n_dev, **cfg.key(),
                                  **({} if isinstance(opt_map, GradientDescent)
                                     else {"optimizer": repr(opt_map)}))
    t0 = time.perf_counter()
    carries, records, blocks, timers = _execute(
        problem, opt_map, flow_objs, lr_arr, x0_arr, cfg, batched=True,
        out_dir=Path(out) if out is not None else None, resume=resume, progress=progress,
        desc=f"{problem.name} sweep x{G}", fingerprint=fingerprint, place=place)
    total = time.perf_counter() - t0
    compile_s = sum(t.compile_s for t in timers.values())
    run_s = sum(t.run_s for t in timers.values())

    runs, run_metrics = [], []
    carries = jax.device_get(carries)
    for g, (lr, seed) in enumerate(grid):
        pick = lambda tree: jax.tree.map(lambda a: np.asarray(a)[g], tree)  # noqa: E731
        recs_g = {k: [pick(c) for c in v] for k, v in records.items()}
        blocks_g = {k: [pick(c) for c in v] for k, v in blocks.items()}
        carries_g = {k: jax.tree.map(jnp.asarray, pick(v)) for k, v in carries.items()}
        # per-run wall time: the batched time shared equally by the grid points
        timings = {k: (t.run_s / G, t.compile_s / G) for k, t in timers.items()}
        comp = _assemble(problem, opt_map, lr, cfg, flow_objs, carries_g, recs_g, blocks_g, timings,
                         dtype)
        runs.append(comp)
        m = comp.metrics
        run_metrics.append({"lr": lr, "seed": seed, "eos_onset_step": m["eos_onset_step"],
                            "flows": m["flows"]})
    metrics = {
        "problem": problem.name,
        "steps": cfg.steps,
        "lrs": lrs,
        "seeds": seed_list,
        "dtype": str(np.dtype(dtype)),
        "devices": n_dev,
        "device_kind": str(jax.devices()[0].device_kind),
        "grid_padded_to": G_pad,
        "compile_s": compile_s,
        "run_s": run_s,
        "total_s": total,
        "runs": run_metrics,
    }
    result = SweepResult(metrics, runs)
    if out is not None:
        result.save(out, figure=figure)
    return result
