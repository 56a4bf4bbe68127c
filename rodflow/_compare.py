"""`compare`: one problem, one step size, the discrete optimiser and its flows on the same run."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _io
from ._maps import AbstractMap, GradientDescent
from ._metrics import (
    discrete_metrics,
    eos_onset,
    first_nonfinite,
    flow_metrics,
    relative_distance,
)
from ._problem import Problem, as_problem
from ._run import (
    EigConfig,
    discrete_chunk,
    discrete_chunk_batched,
    discrete_init,
    discrete_init_batched,
    flow_chunk,
    flow_chunk_batched,
    flow_init,
    flow_init_batched,
)
from ._spectrum import initial_vectors, resolve_method
from .flows import AbstractFlow, FlowArgs, RodFlow, StableFlow

FLOWS: dict[str, type[AbstractFlow]] = {"stable": StableFlow, "rod": RodFlow}
DEFAULT_FLOWS = ("discrete", "stable", "rod")


def register_flow(name: str, cls: type[AbstractFlow]) -> None:
    """Make a flow class available by name to `compare`, `sweep` and the CLI."""
    FLOWS[name] = cls


def resolve_flows(flows) -> dict[str, AbstractFlow]:
    """Names, flow instances, or a `{label: flow}` mapping -> `{label: flow}` (the discrete run
    is implicit)."""
    if isinstance(flows, Mapping):
        out = {}
        for label, f in flows.items():
            if label == "discrete":
                continue
            out[str(label)] = f if isinstance(f, AbstractFlow) else resolve_flows([f])[f]
        return out
    if isinstance(flows, str):
        flows = [f for f in flows.split(",") if f]
    out: dict[str, AbstractFlow] = {}
    for f in flows:
        if isinstance(f, AbstractFlow):
            out[f.name if f.name not in out else f"{f.name}{len(out)}"] = f
        elif f == "discrete":
            continue
        elif f in FLOWS:
            out[f] = FLOWS[f]()
        else:
            raise ValueError(
                f"unknown flow {f!r} in `flows`; choose from: discrete, {', '.join(FLOWS)} "
                "(or pass an AbstractFlow instance)."
            )
    return out


def check_positive(name: str, value, kind=float) -> None:
    """Raise `ValueError` naming `name` unless `value` is a positive number (integer if
    `kind is int`); 0-d NumPy/JAX arrays are accepted."""
    ok = not isinstance(value, (bool, str)) and np.ndim(value) == 0
    if ok:
        try:
            value = float(value)
        except (TypeError, ValueError):
            ok = False
    if not ok or not (value > 0) or not np.isfinite(value) or (kind is int and int(value) != value):
        want = "a positive integer" if kind is int else "a positive number"
        raise ValueError(f"`{name}` must be {want}, got {value!r}.")


@dataclasses.dataclass
class Comparison:
    """The result of [`rodflow.compare`][].

    - `metrics`: the dict written to `metrics.json` (see README for the keys).
    - `series`: per run (`"discrete"`, `"stable"`, `"rod"`, ...) a dict of numpy arrays over
      steps `k = 0..N`: `step`, `loss` (GD's loss, or the flow's predicted GD loss),
      `rel_dist` (flows), `sharpness_step` and `sharpness`, and extras such as the rod's `rho`.
    - `final`: per run, the parameters (as a pytree like `params0`) at step `N`: GD's iterate
      `x_N`, the flows' centres.
    - `snapshots`: per run, `(steps, flat parameter vectors)` every `save_every` steps.
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

    def save(self, out: str | Path, *, figure: bool = True) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _io.write_json(out / "metrics.json", self.metrics)
        _io.write_series(out / "series.npz", self.series)
        if figure:
            from .plot import plot_comparison

            plot_comparison(self, out / "compare.png")
        return out


def format_table(metrics: dict) -> str:
    cols = [("rel_dist_mean_eos", "d mean EoS"), ("rel_dist_max_eos", "d max EoS"),
            ("rel_dist_mean", "d mean"), ("loss_rel_err_mean_eos", "loss err EoS"),
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
    lines.append(f"EoS onset (GD sharpness > {metrics['threshold']:.4g}): "
                 f"{'never' if onset is None else f'step {onset}'}")
    for name, m in metrics["flows"].items():
        if m.get("diverged_at") is not None:
            lines.append(f"WARNING: {name} became non-finite at step {m['diverged_at']}")
    return "\n".join(lines)


def _plan(steps: int, every: int, chunk: int) -> tuple[int, int]:
    """(number of chunks, blocks per chunk) covering steps 0..N with little padding."""
    n_blocks = math.ceil((steps + 1) / every)
    max_blocks = max(1, chunk // every)
    n_chunks = math.ceil(n_blocks / max_blocks)
    return n_chunks, math.ceil(n_blocks / n_chunks)


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0]


def _on_event(name, duration, **kwargs):
    if name in _COMPILE_EVENTS:
        _compile_seconds[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_event)


class _Timed:
    """Calls a filter-jitted function (so compiled programs are cached across calls, e.g. for
    repeated `compare` calls at other step sizes) and splits its wall time into tracing and
    compilation (from JAX's monitoring events) and execution."""

    def __init__(self, fn):
        self.fn, self.compile_s, self.run_s = fn, 0.0, 0.0

    def __call__(self, *args, **kwargs):
        c0, t0 = _compile_seconds[0], time.perf_counter()
        out = jax.block_until_ready(self.fn(*args, **kwargs))
        compiled = _compile_seconds[0] - c0
        self.compile_s += compiled
        self.run_s += max(time.perf_counter() - t0 - compiled, 0.0)
        return out


def compare(
    loss: Any,
    params: Any = None,
    *,
    lr: float,
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
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    figure: bool = True,
) -> Comparison:
    """Run the discrete optimiser and the chosen flows from the same start and compare them.

    **Arguments:**

    - `loss`: `loss(params) -> scalar`, or a [`rodflow.Problem`][] (then `params` is optional).
    - `params`: initial parameters (any pytree, e.g. an Equinox model).
    - `lr`: step size `eta > 0`.
    - `steps`: number of optimiser steps `N`; every flow is integrated over `t in [0, N]`
      (`[start_step, N]` with a warm start).
    - `flows`: names (`"discrete"`, `"stable"`, `"rod"`, ...), flow instances
      (e.g. `rodflow.RodFlow(solver=diffrax.Tsit5(), rtol=1e-6)`), or a `{label: flow}` dict
      to compare several configurations of one flow on the same run.
    - `optimizer`: the one-step map; default gradient descent (`optax.sgd(lr)`).
    - `sharpness_every`: measure sharpness every this many steps (EoS onset resolution).
    - `top_k`, `eig_method`, `eig_iters`: eigensolver settings (see `rodflow.top_eigenpairs`).
    - `chunk`: steps per compiled chunk; after each chunk results go to the host (and to
      `out/checkpoint.npz` when `out` is given).
    - `save_every`: keep flat parameter snapshots every this many steps (a multiple of
      `sharpness_every`); `None` keeps none.
    - `start_step`: warm start. The flows start at step `K = start_step` from the discrete
      run's state there (`(z_K + z_{K+1})/2` and its step, as at step 0), and are measured from
      `K` on (their series are nan before it). Use it to leave out an opening transient that no
      flow models: heavy ball and Adam started at rest ring (complex eigenvalues of modulus
      `sqrt(beta)`) for about `2 ln(100)/ln(1/beta)` steps (88 for `beta = 0.9`);
      [`rodflow.transient_steps`][] gives that count. Default 0: every flow starts at step 0.
    - `out`: directory for `metrics.json`, `series.npz`, `compare.png` and the checkpoint.
    - `resume`: continue from `out/checkpoint.npz` if it exists (same arguments required).
    - `progress`: show a progress bar.

    **Returns:** a [`rodflow.Comparison`][].
    """
    problem = as_problem(loss, params)
    check_positive("lr", lr)
    cfg = _settings(problem, steps, sharpness_every, chunk, top_k, eig_method, eig_iters, save_every,
                    start_step)
    flow_objs = resolve_flows(flows)
    opt_map = optimizer if optimizer is not None else GradientDescent()
    x0 = problem.x0
    extra = {} if isinstance(opt_map, GradientDescent) else {"optimizer": repr(opt_map)}
    fingerprint = _io.fingerprint(problem=problem.name, dim=problem.dim, lr=float(lr),
                                  flows=list(flow_objs), dtype=str(x0.dtype), **cfg.key(), **extra)
    carries, records, blocks, timings = _execute(
        problem, opt_map, flow_objs, jnp.asarray(lr, x0.dtype), x0, cfg, batched=False,
        out_dir=Path(out) if out is not None else None, resume=resume, progress=progress,
        desc=f"{problem.name} lr={lr:g}", fingerprint=fingerprint)
    result = _assemble(problem, opt_map, float(lr), cfg, flow_objs, carries, records, blocks,
                       {k: (t.run_s, t.compile_s) for k, t in timings.items()}, x0.dtype)
    if out is not None:
        result.save(out, figure=figure)
    return result


@dataclasses.dataclass(frozen=True)
class _Settings:
    steps: int
    every: int
    eig: EigConfig
    save_every: int | None
    n_chunks: int
    blocks_per_chunk: int
    start_step: int = 0

    @property
    def chunk_len(self) -> int:
        return self.blocks_per_chunk * self.every

    def key(self) -> dict:
        key = dict(steps=self.steps, every=self.every, chunk=self.chunk_len, save_every=self.save_every,
                   eig=[self.eig.k, self.eig.method, self.eig.max_iters])
        if self.start_step:  # only when set, so that earlier checkpoints still resume
            key["start_step"] = self.start_step
        return key

    def kwargs(self) -> dict:
        return dict(n_blocks=self.blocks_per_chunk, every=self.every, eig=self.eig,
                    snapshots=self.save_every is not None)


def _settings(problem, steps, sharpness_every, chunk, top_k, eig_method, eig_iters, save_every,
              start_step=0):
    """Validate the run settings shared by `compare` and `sweep`."""
    check_positive("steps", steps, int)
    integer = isinstance(start_step, (int, np.integer)) and not isinstance(start_step, bool)
    if not integer or not 0 <= start_step < steps:
        raise ValueError(f"`start_step` must be an integer step in [0, steps) = [0, {steps}) at which the "
                         f"flows start from the discrete run's state, got {start_step!r}.")
    check_positive("sharpness_every", sharpness_every, int)
    check_positive("chunk", chunk, int)
    check_positive("top_k", top_k, int)
    check_positive("eig_iters", eig_iters, int)
    if save_every is not None:
        check_positive("save_every", save_every, int)
        if save_every % sharpness_every:
            raise ValueError(f"`save_every` ({save_every}) must be a multiple of "
                             f"`sharpness_every` ({sharpness_every}).")
    resolve_method(eig_method, problem.dim, top_k)
    n_chunks, bpc = _plan(int(steps), int(sharpness_every), int(chunk))
    eig = EigConfig(k=int(top_k), method=eig_method, max_iters=int(eig_iters))
    return _Settings(int(steps), int(sharpness_every), eig, save_every, n_chunks, bpc, int(start_step))


def _execute(problem, opt_map, flow_objs, lr, x0, cfg: _Settings, *, batched: bool, out_dir, resume,
             progress, desc, fingerprint, place=lambda tree: tree):
    """Run the discrete optimiser and every flow chunk by chunk (optionally batched over a
    leading grid axis of `lr` and `x0`), checkpointing after each chunk. Returns the final
    carries, the per-chunk host records and block records, and the timers."""
    steps, L = cfg.steps, cfg.chunk_len
    U0 = initial_vectors(problem.dim, cfg.eig.k, x0.dtype)
    if batched:
        carries = {"discrete": discrete_init_batched(problem, opt_map, lr, x0, U0)}
        for name, flow in flow_objs.items():
            carries[name] = flow_init_batched(flow, problem, opt_map, lr, x0, U0, cfg.start_step)
    else:
        fargs = FlowArgs(problem, lr, opt_map)
        carries = {"discrete": discrete_init(problem, opt_map, lr, x0, U0)}
        for name, flow in flow_objs.items():
            carries[name] = flow_init(flow, fargs, x0, U0, cfg.start_step)
    records = {name: [] for name in carries}
    blocks = {name: [] for name in carries}
    start_chunk = 0
    if resume and out_dir is not None and (out_dir / "checkpoint.npz").exists():
        start_chunk, carries, records, blocks = _io.load_checkpoint(
            out_dir / "checkpoint.npz", fingerprint, carries)
    carries = place(carries)

    timers = {"discrete": _Timed(discrete_chunk_batched if batched else discrete_chunk)}
    timers.update({name: _Timed(flow_chunk_batched if batched else flow_chunk) for name in flow_objs})
    bar = None
    if progress:
        from tqdm.auto import tqdm

        n_runs = 1 + len(flow_objs)
        bar = tqdm(total=(steps + 1) * n_runs, unit="step", desc=desc, dynamic_ncols=True)
        bar.update(min(start_chunk * L, steps + 1) * n_runs)

    def advance(ci, name):
        if bar is not None:
            bar.set_postfix_str(f"chunk {ci + 1}/{cfg.n_chunks} {name}")
            bar.update(min((ci + 1) * L, steps + 1) - min(ci * L, steps + 1))

    kw = cfg.kwargs()
    flow_kw = {"start_step": cfg.start_step} if cfg.start_step else {}
    n_last = jnp.asarray(steps, jnp.int32)
    for ci in range(start_chunk, cfg.n_chunks):
        k0 = jnp.asarray(ci * L, jnp.int32)
        carries["discrete"], recs, per_block, centres = timers["discrete"](
            problem, opt_map, lr, carries["discrete"], k0, n_last, **kw)
        records["discrete"].append(jax.device_get(recs))
        blocks["discrete"].append(jax.device_get(per_block))
        advance(ci, "discrete")
        for name, flow in flow_objs.items():
            if batched:
                carries[name], recs, per_block = timers[name](
                    flow, problem, opt_map, lr, carries[name], k0, n_last, centres, **kw, **flow_kw)
            else:
                carries[name], recs, per_block = timers[name](
                    flow, fargs, carries[name], k0, n_last, centres, **kw, **flow_kw)
            records[name].append(jax.device_get(recs))
            blocks[name].append(jax.device_get(per_block))
            advance(ci, name)
        del centres
        if out_dir is not None:
            _io.save_checkpoint(out_dir / "checkpoint.npz", fingerprint, ci + 1, carries,
                                records, blocks)
        if _all_diverged(records):
            break
    if bar is not None:
        bar.close()
    return carries, records, blocks, timers


def _all_diverged(records) -> bool:
    """True when every run (and every grid point of a batched run) has a non-finite loss."""
    return not any(np.isfinite(np.asarray(recs[-1]["loss"])[..., -1]).any() for recs in records.values())


def _concat(chunks: list[dict]) -> dict[str, np.ndarray]:
    if not chunks:
        return {}
    return {k: np.concatenate([np.asarray(c[k]) for c in chunks]) for k in chunks[0]}


def _assemble(problem: Problem, opt_map, lr, cfg: _Settings, flow_objs, carries, records, blocks,
              timings: dict[str, tuple[float, float]], dtype) -> Comparison:
    """Host-side: concatenate chunk records of one run, compute metrics, build the result."""
    steps, every, save_every = cfg.steps, cfg.every, cfg.save_every
    n_rec = steps + 1
    threshold = float(opt_map.threshold(lr))
    series: dict[str, dict[str, np.ndarray]] = {}
    snapshots: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def block_series(name):
        b = _concat(blocks[name])
        sharp = np.asarray(b["sharpness"])
        sharp = sharp[:, 0] if sharp.ndim == 2 else sharp
        s_steps = np.arange(len(sharp)) * every
        keep = s_steps <= steps
        if save_every is not None:
            snap = np.asarray(b["snapshot"])
            sel = keep & (s_steps % save_every == 0)
            snapshots[name] = (s_steps[sel], snap[sel])
        out = {"sharpness_step": s_steps[keep], "sharpness": sharp[keep]}
        if np.asarray(b["sharpness"]).ndim == 2:
            out["sharpness_topk"] = np.asarray(b["sharpness"])[keep]
        return out

    d = {k: v[:n_rec] for k, v in _concat(records["discrete"]).items()}
    d["step"] = np.arange(len(d["loss"]))
    d.update(block_series("discrete"))
    d["eos_onset_step"] = eos_onset(d["sharpness_step"], d["sharpness"], threshold)
    d_div = first_nonfinite(d["loss"])
    series["discrete"] = {k: v for k, v in d.items() if k != "eos_onset_step"}

    flows_m: dict[str, dict] = {}
    dm = discrete_metrics(d, threshold)
    dm.update(wall_s=timings["discrete"][0], compile_s=timings["discrete"][1],
              grad_evals=len(d["loss"]), diverged_at=d_div)
    flows_m["discrete"] = dm
    for name, flow in flow_objs.items():
        f = {k: v[:n_rec] for k, v in _concat(records[name]).items()}
        f["step"] = np.arange(len(f["loss"]))
        f["rel_dist"] = relative_distance(f["dist"], d["disp"][: len(f["dist"])])
        f.update(block_series(name))
        _mask_before(f, cfg.start_step)
        m = flow_metrics(f, d, start=cfg.start_step)
        n_rhs = int(carries[name]["num_steps"]) * flow.evals_per_step()
        cost = flow.cost_per_rhs()
        m.update(wall_s=timings[name][0], compile_s=timings[name][1],
                 grad_evals=n_rhs * cost["grads"] + 2 * n_rhs * cost["hvps"],
                 rhs_evals=n_rhs, diverged_at=_shifted(first_nonfinite(f["loss"][cfg.start_step:]),
                                                       cfg.start_step))
        flows_m[name] = m
        series[name] = f

    final = {"discrete": problem.unravel(carries["discrete"]["x_final"])}
    for name, flow in flow_objs.items():
        final[name] = problem.unravel(opt_map.params(problem, flow.centre(carries[name]["y_final"])))
    metrics = {
        "problem": problem.name,
        "lr": lr,
        "steps": steps,
        "dtype": str(np.dtype(dtype)),
        "optimizer": opt_map.name,
        "optimizer_options": _map_options(opt_map),
        "threshold": threshold,
        "sharpness_kind": "preconditioned" if hasattr(opt_map, "preconditioner") else "hessian",
        "eos_onset_step": d["eos_onset_step"],
        "start_step": cfg.start_step,
        "sharpness_every": every,
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


def _map_options(opt_map) -> dict:
    out = {}
    for f in dataclasses.fields(opt_map):
        v = getattr(opt_map, f.name)
        if isinstance(v, (bool, int, float, str)):
            out[f.name] = v
    return out


def flow_from_options(name: str, **opts) -> AbstractFlow:
    """A flow by name with options (used by the CLI): `solver`, `dt`, `rtol`, `variant`, ..."""
    if name not in FLOWS:
        resolve_flows([name])
    cls = FLOWS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in opts.items() if k in fields and v is not None})


