"""The entry points: [`compare`][] (one step size) and [`sweep`][] (a grid of step sizes and
seeds). Both run the same engine; `compare` is the grid of one."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from . import _io
from ._engine import CHECKPOINT_FORMAT, check_eig, opening_catapult, run_grid
from ._maps import AbstractMap, GradientDescent, transient_steps
from ._parallel import Layout, barrier, check_layout, is_writer, on_writer, to_host
from ._problem import Problem, as_problem
from ._registry import DEFAULT_FLOWS, check_supported, resolve_flows
from ._result import Comparison, SweepResult, assemble
from ._schedule import check_schedule, describe, lr_table
from ._schedule import digest as schedule_digest
from ._settings import Settings, check_positive
from .flows import AbstractFlow

Flows = Sequence[str | AbstractFlow] | Mapping[str, AbstractFlow]


def compare(loss: Any, params: Any = None, *, lr: float | Callable, flows: Flows = DEFAULT_FLOWS,
            optimizer: AbstractMap | None = None, devices: int | None = None,
            settings: Settings | None = None, **options) -> Comparison:
    """Run the discrete optimiser and the chosen flows from the same start and compare them.

    **Arguments:**

    - `loss`: `loss(params) -> scalar`, or a [`rodflow.Problem`][] (then `params` is optional).
    - `params`: initial parameters (any pytree, e.g. an Equinox model).
    - `lr`: step size `eta > 0`, or a learning-rate schedule `t -> lr(t)` (an optax schedule
      such as `optax.linear_schedule(0.01, 0.07, 500)`, or any function of the step count
      written with `jax.numpy`): the discrete run's step `k` uses `lr(k)` (`optax.sgd(lr)`),
      a flow at time `t` uses `lr(t + 1/2)`, and the threshold becomes `2/lr(t)` (see the
      guide "Learning-rate schedules"). `metrics["lr"]` is then the schedule's peak over the run.
    - `flows`: names (`"discrete"`, `"stable"`, `"rod"`, ...; see `rodflow.FLOWS`), flow
      instances (e.g. `rodflow.RodFlow(solver=diffrax.Tsit5(), rtol=1e-6)`), or a
      `{label: flow}` dict to compare several configurations of one flow on the same run.
    - `optimizer`: the one-step map; default gradient descent (`optax.sgd(lr)`). Every flow must
      support it (a one-line `ValueError` names the flow and what the map lacks).
    - `devices`: data parallelism: split the loss's examples over this many of `jax.devices()`
      (default 1), with the parameters and every flow's state replicated; the loss's mean is
      reduced across devices. Needs a loss with an `examples` attribute (the built-in problems'
      losses have one) whose count the devices divide. The numbers equal the one-device run's up
      to the order of the floating-point sums.
    - `settings`: a [`rodflow.Settings`][]; `**options` are its fields (`steps=...`,
      `sharpness_every=...`, `start_step=...`, `out=...`, ...) and replace its values.

    **Returns:** a [`rodflow.Comparison`][] (also written to `out` when given; in a run over
    several processes, only process 0 writes).
    """
    schedule = None
    if callable(lr):
        schedule, lr = lr, 1.0
    else:
        check_positive("lr", lr)
    settings = Settings.from_options(settings, options)
    with jax.default_matmul_precision(settings.matmul_precision):
        return _compare(as_problem(loss, params), lr, flows, optimizer, settings, schedule, devices)


def _compare(problem: Problem, lr, flows, optimizer, settings: Settings, schedule=None,
             devices: int | None = None) -> Comparison:
    layout = Layout(1, 1 if devices is None else _count("devices", devices))
    check_layout(problem, layout.grid, layout.data)
    peak, shape = None, None
    if schedule is not None:
        values = check_schedule("lr", schedule, settings.steps)
        peak = float(values.max())
        lr, shape = _constant_or_shape(values, schedule, 1.0)
    flows_, opt_map = _prepare(problem, flows, optimizer, settings)
    x0 = problem.x0
    start, auto = _start_step(problem, opt_map, settings, [float(lr)], x0[None], grid=False, schedule=shape)
    settings = settings.fitted(1, problem.dim, np.dtype(x0.dtype).itemsize)
    extra = {} if layout.data == 1 else {"data_devices": layout.data}
    if schedule is None:
        config = _config(problem, opt_map, flows_, settings, start, [x0], lr=float(lr), **extra)
        desc, lr_series = f"lr={lr:g}", None
    else:
        config = _config(problem, opt_map, flows_, settings, start, [x0], lr=peak,
                         lr_schedule=schedule_digest(schedule, settings.steps, x0.dtype), **extra)
        desc, lr_series = f"lr schedule, peak {peak:g}", _lr_series([lr], shape, settings.steps, x0.dtype)[0]
    run = run_grid(problem, opt_map, flows_, jnp.asarray([lr], x0.dtype), x0[None], settings, start,
                   config=config, desc=f"{problem.name} {desc}", layout=layout, schedule=shape)
    run = run._replace(carries=to_host(run.carries))
    timings = {k: (t.run_s, t.compile_s) for k, t in run.timers.items()}
    result = assemble(problem, opt_map, float(lr) if schedule is None else peak, settings, start, flows_, run,
                      0, timings, x0.dtype, lr_series, None if schedule is None else describe(schedule))
    result.metrics["matmul_precision"] = settings.matmul_precision
    result.metrics.update(_layout_metrics(layout))
    if auto is not None:
        result.metrics["start_step_auto"] = auto
    _save(result, settings)
    return result


def sweep(loss: Any, params: Any = None, *, lrs: Sequence[float], seeds: Sequence[int] | None = None,
          flows: Flows = DEFAULT_FLOWS, optimizer: AbstractMap | None = None, devices: int | None = None,
          data_devices: int = 1, schedule: Any = None, settings: Settings | None = None,
          **options) -> SweepResult:
    """[`rodflow.compare`][] over a grid of step sizes (and initialisation seeds) as ONE
    compiled, vmapped program per run kind, sharded over devices.

    **Arguments** (as for `compare`, plus):

    - `lrs`: the step sizes (with a `schedule`: its peaks).
    - `seeds`: initialisation seeds; needs a problem with `init(key)` (built-in networks have
      one). `None` uses `params` (or the problem's `params0`) for every step size.
    - `devices`: how many of `jax.devices()` to run on (default: all). The grid is split over
      `devices / data_devices` of them, padded (by repeating its last point) to a multiple of
      that count; the padding is dropped from the results.
    - `data_devices`: how many devices each grid point's examples are split over (data
      parallelism, as `compare(devices=...)`); the devices form a `grid x data` mesh of shape
      `(devices / data_devices, data_devices)`. Default 1.
    - `schedule`: a learning-rate schedule `t -> lr(t)` (e.g. an optax schedule); the sweep
      varies its peak: grid point `g` runs `lrs[g] / peak * schedule(t)`, `peak` the schedule's
      largest value over steps `0..steps`. `None`: constant step sizes `lrs`.

    The whole grid is traced and compiled once per run kind (the discrete run and each flow),
    whatever its size; `lr` and the initial parameters are traced. Only per-step scalars, the
    sharpness and optional snapshots leave the devices.
    """
    lrs = [float(v) for v in np.atleast_1d(np.asarray(lrs, dtype=float))]
    if not lrs:
        raise ValueError("`lrs` is empty; give at least one step size.")
    for v in lrs:
        check_positive("lrs", v)
    settings = Settings.from_options(settings, options)
    with jax.default_matmul_precision(settings.matmul_precision):
        return _sweep(as_problem(loss, params), lrs, seeds, flows, optimizer, devices, settings, schedule,
                      data_devices)


def _sweep(problem: Problem, lrs: list[float], seeds, flows, optimizer, devices,
           settings: Settings, schedule=None, data_devices: int = 1) -> SweepResult:
    n_data = _count("data_devices", data_devices)
    n_dev = len(jax.devices()) if devices is None else _count("devices", devices)
    if n_dev % n_data:
        raise ValueError(f"`devices` ({n_dev}) must be a multiple of `data_devices` ({n_data}): the devices "
                         "form a grid x data mesh.")
    layout = Layout(n_dev // n_data, n_data)
    check_layout(problem, layout.grid, layout.data)
    # with a schedule, grid point g's scale is lrs[g] / peak (its step size lrs[g] / peak * schedule(t))
    scales, shape = lrs, None
    if schedule is not None:
        values = check_schedule("schedule", schedule, settings.steps)
        peak = float(values.max())
        _, shape = _constant_or_shape(values, schedule, 1.0)
        if shape is not None:
            scales = [v / peak for v in lrs]
    flows_, opt_map = _prepare(problem, flows, optimizer, settings)
    seed_list, x0s = _initial_points(problem, seeds)
    grid = [(lr, s) for s in seed_list for lr in lrs]
    scale_of = dict(zip(lrs, scales))
    start, auto = _start_step(problem, opt_map, settings, [scale_of[lr] for lr, _ in grid],
                              jnp.stack([x0s[i // len(lrs)] for i in range(len(grid))]), grid=True,
                              schedule=shape)
    G = len(grid)
    n_grid = layout.grid
    index = list(range(G)) + [G - 1] * (-(-G // n_grid) * n_grid - G)
    lr_arr = jnp.asarray([scale_of[grid[i][0]] for i in index], problem.dtype)
    x0_arr = jnp.stack([x0s[i // len(lrs)] for i in index])
    settings = settings.fitted(len(index) // n_grid, problem.dim, np.dtype(problem.dtype).itemsize)
    extra = ({} if schedule is None
             else {"lr_schedule": schedule_digest(schedule, settings.steps, problem.dtype)})
    if n_data > 1:
        extra["data_devices"] = n_data
    config = _config(problem, opt_map, flows_, settings, start, x0s, lrs=lrs, seeds=seed_list, devices=n_dev,
                     **extra)
    t0 = time.perf_counter()
    run = run_grid(problem, opt_map, flows_, lr_arr, x0_arr, settings, start,
                   config=config, desc=f"{problem.name} sweep x{G}", layout=layout, schedule=shape)
    total = time.perf_counter() - t0
    run = run._replace(carries=to_host(run.carries))
    # per-run wall time: the batched time shared equally by the grid points
    timings = {k: (t.run_s / G, t.compile_s / G) for k, t in run.timers.items()}
    tables = (None if schedule is None
              else _lr_series([scale_of[lr] for lr, _ in grid], shape, settings.steps, problem.dtype))
    runs = [assemble(problem, opt_map, lr, settings, start, flows_, run, g, timings, problem.dtype,
                     None if tables is None else tables[g], None if schedule is None else describe(schedule))
            for g, (lr, _) in enumerate(grid)]
    metrics = {
        "problem": problem.name, "steps": settings.steps, "lrs": lrs, "seeds": seed_list,
        "dtype": str(np.dtype(problem.dtype)), "matmul_precision": settings.matmul_precision,
        "devices": n_dev, **_layout_metrics(layout),
        **({} if schedule is None else {"lr_schedule": describe(schedule)}),
        "device_kind": str(jax.devices()[0].device_kind), "grid_padded_to": len(index),
        "compile_s": sum(t.compile_s for t in run.timers.values()),
        "run_s": sum(t.run_s for t in run.timers.values()), "total_s": total,
        **({} if auto is None else {"start_step_auto": auto}),
        "runs": [{"lr": lr, "seed": seed,
                  **{k: c.metrics[k] for k in ("eos_onset_step", "eos_onset_rule", "sharpness_initial")},
                  "flows": c.metrics["flows"]} for (lr, seed), c in zip(grid, runs)],
    }
    result = SweepResult(metrics, runs)
    _save(result, settings)
    return result


def _count(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"`{name}` must be a positive integer (a number of devices), got {value!r}.")
    return int(value)


def _layout_metrics(layout: Layout) -> dict:
    return {"mesh": {"grid": layout.grid, "data": layout.data}, "processes": jax.process_count()}


def _save(result, settings: Settings) -> None:
    """Write the result to `out` on process 0 (every process holds the same result)."""
    if settings.out is not None:
        if is_writer():
            result.save(settings.out, figure=settings.figure)
        barrier("rodflow:saved")


def _constant_or_shape(values: np.ndarray, schedule: Callable, scale: float):
    """`(scale, shape)` for the engine: a schedule that is constant over the run (every value
    equal) runs as the constant step size `scale * value` without a shape (the same compiled
    program as a constant `lr`, bit for bit: a schedule's constant inside the program lets XLA
    rearrange the arithmetic around it); any other as `(scale, schedule)`."""
    if np.all(values == values[0]):
        return scale * float(values[0]), None
    return scale, schedule


def _lr_series(scales, shape, steps: int, dtype) -> np.ndarray:
    """`(G, steps + 1)` step sizes per grid point and step (constant rows without a shape)."""
    if shape is None:
        return np.repeat(np.asarray(scales, dtype)[:, None], steps + 1, axis=1)
    return lr_table(scales, shape, steps, dtype)


def _prepare(problem: Problem, flows: Flows, optimizer, settings: Settings):
    """Validate what the run needs before anything is computed: the flows by label, the map,
    the resolved warm-start step."""
    check_eig(problem, settings)
    if settings.out is not None:
        on_writer(_io.prepare_out, Path(settings.out), resume=settings.resume, overwrite=settings.overwrite)
    flows_ = resolve_flows(flows)
    opt_map = optimizer if optimizer is not None else GradientDescent()
    if not isinstance(opt_map, AbstractMap):
        raise ValueError(f"`optimizer` must be a rodflow map (e.g. rodflow.Adam()), got {opt_map!r}.")
    check_supported(flows_, opt_map)
    if settings.start_step == "auto" and transient_steps(opt_map) >= settings.steps:
        raise ValueError(f"`start_step` resolved to {transient_steps(opt_map)}, which is not below `steps` "
                         f"({settings.steps}).")
    return flows_, opt_map


def _start_step(problem: Problem, opt_map: AbstractMap, settings: Settings, lrs, x0s, *,
                grid: bool, schedule=None) -> tuple[int, dict | None]:
    """The warm-start step and, for `start_step="auto"`, how it was chosen: after the momentum
    transient ([`rodflow.transient_steps`][]) and after a catapult from initialisation (the first
    measured step with the sharpness back at or below the threshold, for every grid point
    `(lrs[g], x0s[g])`; the latest of them for a sweep)."""
    if settings.start_step != "auto":
        return int(settings.start_step), None
    momentum = transient_steps(opt_map)
    ends = opening_catapult(problem, opt_map, lrs, x0s, settings, schedule)
    catapult = max((e for e in ends if e is not None), default=0)
    start = max(momentum, catapult)
    if start >= settings.steps:
        raise ValueError(f"`start_step` resolved to {start}, which is not below `steps` ({settings.steps}).")
    return start, {"momentum_transient": momentum, "opening_catapult_end": ends if grid else ends[0],
                   "start_step": start}


def _initial_points(problem: Problem, seeds):
    if seeds is None:
        return [None], [problem.x0]
    if problem.init is None:
        raise ValueError(f"`seeds` needs a problem with an `init(key)` function; {problem.name!r} "
                         "has none. Pass `seeds=None`, or build a rodflow.Problem with `init=`.")
    seed_list = [int(s) for s in seeds]
    return seed_list, [problem.ravel(problem.init(jr.PRNGKey(s))) for s in seed_list]


def _config(problem: Problem, opt_map, flows, settings: Settings, start: int, x0s, **grid) -> dict:
    """Every setting that changes a number: a checkpoint written with another one is refused.
    The problem enters by its name, its data and the initial parameters (as hashes), the flows
    and the optimiser by their full configuration."""
    data = jax.tree.leaves(eqx.filter(problem.loss, eqx.is_array))
    return dict(format=CHECKPOINT_FORMAT, problem=problem.name, dim=problem.dim, dtype=str(problem.dtype),
                data=_io.digest(*data), x0=_io.digest(*x0s), optimizer=repr(opt_map),
                flows={label: repr(f) for label, f in flows.items()}, **grid, **settings.key(start))
