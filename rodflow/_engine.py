"""The engine: one code path that runs a grid of (step size, initial parameters) points, the
discrete optimiser and every flow, chunk by chunk, with checkpoints and timings."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _io
from ._chunks import (
    converged_block,
    grid_discrete_chunk,
    grid_discrete_init,
    grid_flow_chunk,
    grid_flow_init,
    grid_warm_state,
)
from ._maps import AbstractMap
from ._parallel import Layout, is_writer, to_host
from ._problem import Problem
from ._schedule import lr_table
from ._settings import Settings
from ._spectrum import initial_vectors, resolve_method
from .flows import AbstractFlow

# Bumped whenever the layout of the carries changes, so that an older checkpoint is refused
# with a clear message instead of being loaded into the wrong places.
CHECKPOINT_FORMAT = 3

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


# programs compiled on their own (not inside the target's trace) by a run kind's initial state,
# which is computed op by op: their compilation counts as the run kind's
_OWN_INIT_PROGRAMS = (converged_block.__name__, f"jit({converged_block.__name__})")


@contextlib.contextmanager
def _compile_clock():
    """Seconds spent tracing and compiling the program being called while the context is open
    (JAX's monitoring events; the listener is registered for the duration of the run only).
    Only events of the called function itself count (and those of the programs the initial
    states compile on their own, `_OWN_INIT_PROGRAMS`): the functions it calls are traced inside
    its trace, and counting their events too would count that time twice."""
    clock = {"target": None, "total": 0.0}

    def listener(name, duration, **kwargs):
        fun = kwargs.get("fun_name")
        if name in _COMPILE_EVENTS and (fun is None or fun in (clock["target"], f"jit({clock['target']})")
                                        or fun in _OWN_INIT_PROGRAMS):
            clock["total"] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield clock
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


class Timer:
    """Splits the wall time of the calls of one run kind into compilation and execution."""

    def __init__(self, clock):
        self.clock, self.compile_s, self.run_s = clock, 0.0, 0.0

    def __call__(self, fn, *args, **kwargs):
        self.clock["target"] = getattr(fn, "__name__", None)
        c0, t0 = self.clock["total"], time.perf_counter()
        out = jax.block_until_ready(fn(*args, **kwargs))
        wall = time.perf_counter() - t0
        compiled = min(self.clock["total"] - c0, wall)
        self.compile_s += compiled
        self.run_s += wall - compiled
        return out


class GridRun(NamedTuple):
    """What the engine hands to the host side: per run kind (`"discrete"` and each flow label)
    the final carry (grid axis first), the per-chunk step records and block records, and the
    timer."""

    carries: dict[str, Any]
    records: dict[str, list]
    blocks: dict[str, list]
    timers: dict[str, Timer]


def check_eig(problem: Problem, settings: Settings) -> None:
    if settings.top_k > problem.dim:
        raise ValueError(f"`top_k` ({settings.top_k}) must be at most the number of parameters "
                         f"({problem.dim}).")
    resolve_method(settings.eig_method, problem.dim, settings.top_k, settings.eig_iters)


def run_grid(problem: Problem, opt_map: AbstractMap, flows: dict[str, AbstractFlow], lr, x0,
             settings: Settings, start_step: int, *, config: dict, desc: str,
             layout: Layout = Layout(1, 1), schedule=None) -> GridRun:
    """Run the discrete optimiser and every flow over the grid `lr` (shape `(G,)`), `x0`
    (`(G, p)`), chunk by chunk, checkpointing after each chunk into `settings.out`; `config`
    holds every setting that changes a number (a checkpoint written with another is refused).
    With a `schedule` (a static callable), grid point `g`'s step size at step `t` is
    `lr[g] * schedule(t)`. `layout` places the grid and the problem's data on devices (one
    device by default); records and checkpoints come back to the host on every process, and
    only process 0 writes the checkpoint."""
    steps, L = settings.steps, settings.chunk_len
    n_chunks, blocks_per_chunk = settings.plan
    out_dir = Path(settings.out) if settings.out is not None else None
    U0 = layout.replicate(initial_vectors(problem.dim, settings.top_k, x0.dtype))
    problem, lr, x0 = layout.place_problem(problem), layout.place_grid(lr), layout.place_grid(x0)
    with _compile_clock() as clock:
        timers = {name: Timer(clock) for name in ("discrete", *flows)}
        carries = {"discrete": timers["discrete"](grid_discrete_init, problem, opt_map, lr, x0, U0, schedule,
                                                         settings.eig)}
        z_start = grid_warm_state(problem, opt_map, lr, x0, start_step, schedule) if start_step else None
        for name, flow in flows.items():
            carries[name] = timers[name](grid_flow_init, flow, problem, opt_map, lr, x0, z_start, U0,
                                         start_step, schedule, settings.eig)
        records: dict[str, list] = {name: [] for name in carries}
        blocks: dict[str, list] = {name: [] for name in carries}
        start_chunk = 0
        checkpoint = None if out_dir is None else out_dir / "checkpoint.npz"
        if settings.resume and checkpoint is not None and checkpoint.exists():
            start_chunk, carries, records, blocks = _io.load_checkpoint(checkpoint, config, to_host(carries))
        carries = layout.place_grid(carries)
        bar = _progress(settings, desc, 1 + len(flows), min(start_chunk * L, steps + 1))
        kw = dict(n_blocks=blocks_per_chunk, every=settings.sharpness_every, eig=settings.eig,
                  snapshots=settings.save_every is not None)
        if schedule is not None:
            kw["schedule"] = schedule
        n_last = jnp.asarray(steps, jnp.int32)
        for ci in range(start_chunk, n_chunks):
            k0 = jnp.asarray(ci * L, jnp.int32)
            advance = min((ci + 1) * L, steps + 1) - min(ci * L, steps + 1)
            carries["discrete"], recs, per_block, centres = timers["discrete"](
                grid_discrete_chunk, problem, opt_map, lr, carries["discrete"], k0, n_last, **kw)
            _keep(records, blocks, "discrete", recs, per_block, bar, advance)
            for name, flow in flows.items():
                carries[name], recs, per_block = timers[name](
                    grid_flow_chunk, flow, problem, opt_map, lr, carries[name], k0, n_last, centres,
                    **kw, start_step=start_step)
                _keep(records, blocks, name, recs, per_block, bar, advance)
            del centres
            if checkpoint is not None:
                host = to_host(carries)  # a collective over processes: every process takes part
                if is_writer():
                    _io.save_checkpoint(checkpoint, config, ci + 1, host, records, blocks)
            if _all_diverged(records):
                break
        if bar is not None:
            bar.close()
    return GridRun(carries, records, blocks, timers)


def _keep(records, blocks, name, recs, per_block, bar, advance):
    records[name].append(to_host(recs))
    blocks[name].append(to_host(per_block))
    if bar is not None:
        bar.set_postfix_str(name)
        bar.update(advance)


def _progress(settings: Settings, desc: str, n_runs: int, done: int):
    if not settings.progress:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=(settings.steps + 1) * n_runs, unit="step", desc=desc, dynamic_ncols=True)
    bar.update(done * n_runs)
    return bar


def _all_diverged(records) -> bool:
    """True when every run at every grid point has a non-finite loss."""
    return not any(np.isfinite(np.asarray(recs[-1]["loss"])[..., -1]).any() for recs in records.values())


def opening_catapult(problem: Problem, opt_map: AbstractMap, lrs, x0s,
                     settings: Settings, schedule=None) -> list[int | None]:
    """The end of a catapult from initialisation, for each grid point `(lrs[g], x0s[g])`: the first
    measured step (a multiple of `settings.sharpness_every`) at which the optimiser's effective
    sharpness is at or below its threshold, for a run that starts above it. `0` when the run
    starts at or below the threshold, `None` when the sharpness does not come back within the
    first half of the run (or becomes non-finite).

    One map step multiplies an oscillation along a direction of curvature `lambda` by
    `|lr lambda - 1|`; at initialisation `lr lambda` can be several times the threshold, and GD
    catapults (the oscillation grows by a factor up to ~3 per step, the loss spikes, the iterate
    moves to a flatter region within a few steps). No smooth flow follows that step by step:
    `start_step="auto"` starts the flows after it. The discrete run's own initial state and
    chunk (one block of `sharpness_every` steps at a time, over the whole grid) are used, so the
    sharpness is the one the run measures. With a `schedule` (`lrs` are then the grid points'
    scales) the threshold at step `k` is `threshold(lrs[g] * schedule(k))`.
    """
    every = settings.sharpness_every
    dtype = x0s.dtype
    lr = jnp.asarray(lrs, dtype)
    if schedule is None:
        thresholds = [float(opt_map.threshold(v)) for v in lrs]
        extra = {}
    else:
        table = np.asarray(opt_map.threshold(lr_table(lrs, schedule, settings.steps, dtype)), float)
        extra = {"schedule": schedule}
    carry = grid_discrete_init(problem, opt_map, lr, x0s, initial_vectors(problem.dim, settings.top_k, dtype),
                               schedule, settings.eig)
    n_last = jnp.asarray(settings.steps, jnp.int32)
    ends: list[int | None] = [None] * len(lrs)
    pending = set(range(len(lrs)))
    for k in range(0, settings.steps // 2 + 1, every):
        carry, _, per_block, _ = grid_discrete_chunk(problem, opt_map, lr, carry, jnp.asarray(k, jnp.int32),
                                                     n_last, n_blocks=1, every=every, eig=settings.eig,
                                                     snapshots=False, **extra)
        S = np.asarray(per_block["sharpness"])[:, 0, 0]  # at step k
        if schedule is not None:
            thresholds = table[:, k]
        for g in sorted(pending):
            if not np.isfinite(S[g]):
                pending.discard(g)
            elif S[g] <= thresholds[g]:
                ends[g] = k
                pending.discard(g)
        if not pending:
            break
    return ends
