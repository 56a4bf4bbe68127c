"""Compiled chunks: the discrete optimiser (`lax.scan`) and the flows (`diffrax.diffeqsolve`).

A run is cut into *chunks* of whole *blocks*. A block is `every` steps: at its start the
sharpness is measured (warm-started eigensolver, or the flow's own estimate), then the run
advances `every` steps, recording scalar observables at each integer step. Only scalars, the
sharpness and (optionally) block-start snapshots leave the device; GD's centres `m_k` for the
current chunk are kept on the device and handed to the flows, which compare against them
inside the compiled program.

Every run is a *grid* of points (step size, initial parameters): the per-point functions below
are `jax.vmap`ped over a leading grid axis and jit-compiled once per run kind (`compare` is the
grid of one). The step size and the initial parameters are traced, so the same compiled program
serves every grid of the same size.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._lax import GRID_AXIS
from ._maps import AbstractMap
from ._problem import Problem
from ._schedule import scaled
from ._settings import EIG_ITERS, EigConfig
from .flows._base import AbstractFlow, FlowArgs


class DiscreteCarry(NamedTuple):
    """State of the discrete run between chunks."""

    x: Any  # the iterate x_k
    opt_state: Any  # the optax state at step k
    U: Any  # eigenvector warm start of the sharpness measurement
    m0: Any  # the first centre (x_0 + x_1)/2 (displacements are measured from it)
    x_final: Any  # the iterate at the last counted step


class FlowCarry(NamedTuple):
    """State of a flow between chunks."""

    y: Any  # the flow's state at the chunk's end time
    U: Any  # eigenvector warm start (flows that measure the sharpness by an eigensolver)
    y_final: Any  # the state at the last counted step
    num_steps: Any  # solver steps taken so far (cost accounting)
    frozen: Any  # the flow failed or became non-finite: it no longer advances (see flow_chunk)


def _where(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _nan_like(tree):
    return jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), tree)


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


def _norm(x):
    return jnp.linalg.norm(x)


def _merge(recs):
    """`(blocks, every, ...)` -> `(blocks * every, ...)`."""
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), recs)


# ---------------------------------------------------------------------------------------------
# one grid point
# ---------------------------------------------------------------------------------------------
def cold_start(eig: EigConfig | None) -> bool:
    """Whether the first measurement starts from a converged block: for the Krylov estimator
    (`eig.method == "krylov"`: a fixed number of blocks from the previous measurement's vectors,
    no convergence loop) the top eigenvectors at the start converged by the default eigensolver
    ([`converged_block`][]), so that its first measurements are not those of a random start
    (off by 20-35% with 3 or 4 blocks); other methods start from the random block."""
    return eig is not None and eig.method == "krylov"


@eqx.filter_jit
def converged_block(measured, *args, **kwargs):
    """The eigenvectors of `measured(*args, **kwargs, method="auto", max_iters=EIG_ITERS)`
    (an opt map's or a flow's `sharpness`), compiled once and reused by later runs of the same
    problem (called op by op, the eigensolver would be compiled again at every run: 3.5 s per
    run on `mlp-digits`). Only the starting vectors of the first measurement come from it, not
    the trajectory, so compiling it moves no run."""
    return measured(*args, **kwargs, method="auto", max_iters=EIG_ITERS)[1]


def discrete_init(problem: Problem, opt_map: AbstractMap, lr, x0, U0, schedule=None,
                  eig: EigConfig | None = None) -> DiscreteCarry:
    lr0 = scaled(lr, schedule, jnp.asarray(0, jnp.int32))
    opt = opt_map.optimizer(lr0)
    state0 = opt.init(x0)
    x1 = optax.apply_updates(x0, opt.update(jax.grad(problem.loss_flat)(x0), state0, x0)[0])
    if cold_start(eig):
        z0 = opt_map.pack(problem, x0, state0)
        U0 = converged_block(opt_map.sharpness, problem, z0, lr0, U0, jnp.zeros((), x0.dtype))
    return DiscreteCarry(x0, state0, U0, 0.5 * (x0 + x1), x0)


def discrete_chunk(problem: Problem, opt_map: AbstractMap, lr, carry: DiscreteCarry, k0, n_last, *,
                   n_blocks: int, every: int, eig: EigConfig, snapshots: bool, schedule=None):
    """Advance the discrete optimiser `n_blocks * every` steps from global step `k0`.

    Records, for each step `k`: `loss = L(x_k)`, `loss_next = L(x_{k+1})`,
    `disp = |m_k - m_0|` with `m_k = (x_k + x_{k+1})/2`, and GD's own rod length
    `rho = |x_{k+1} - x_k| / 2`; per block: the optimiser's effective sharpness at the block
    start (for GD the top-k Hessian eigenvalues, for Adam those of `P^{-1} H`). Returns the
    centres `m_k` of the chunk (for the flows) without sending them to the host. `n_last` is the
    last step that counts (`x_final` is the iterate there). With a `schedule` step `k` is a
    step of `opt_map.optimizer(lr * schedule(k))`, which is `optax.sgd(schedule)` (optax
    evaluates the schedule at the count before the update).
    """
    opt_constant = opt_map.optimizer(lr)
    loss_fn = problem.loss_flat

    def step(state, k):
        x, opt_state, x_final = state
        loss, g = jax.value_and_grad(loss_fn)(x)
        if schedule is not None:
            # optax's count is int32 (an optax schedule computes in float32 on it)
            opt = opt_map.optimizer(scaled(lr, schedule, k.astype(jnp.int32)))
        else:
            opt = opt_constant
        updates, new_opt_state = opt.update(g, opt_state, x)
        x1 = optax.apply_updates(x, updates)
        m = 0.5 * (x + x1)
        rec = {"loss": loss, "disp": _norm(m - carry.m0), "rho": 0.5 * _norm(x1 - x)}
        x_final = jnp.where(k == n_last, x, x_final)
        return (x1, new_opt_state, x_final), (rec, m)

    def block(state, b):
        x, opt_state, U, x_final = state
        kb = k0 + b * every
        vals, U = opt_map.sharpness(problem, opt_map.pack(problem, x, opt_state),
                                    scaled(lr, schedule, kb.astype(jnp.int32)), U,
                                    kb.astype(x.dtype), method=eig.method,
                                    max_iters=eig.max_iters)
        out = {"sharpness": vals, "snapshot": x if snapshots else None}
        ks = k0 + b * every + jnp.arange(every)
        (x, opt_state, x_final), (recs, ms) = jax.lax.scan(step, (x, opt_state, x_final), ks)
        # L(x_{k+1}) is the next step's L(x_k): one more loss per block, not one per step
        recs["loss_next"] = jnp.concatenate([recs["loss"][1:], loss_fn(x)[None]])
        return (x, opt_state, U, x_final), (recs, ms, out)

    state = (carry.x, carry.opt_state, carry.U, carry.x_final)
    (x, opt_state, U, x_final), (recs, ms, per_block) = jax.lax.scan(block, state, jnp.arange(n_blocks))
    if not snapshots:
        del per_block["snapshot"]
    ms = ms.reshape(-1, ms.shape[-1])
    return DiscreteCarry(x, opt_state, U, carry.m0, x_final), _merge(recs), per_block, ms


def flow_args(problem: Problem, opt_map: AbstractMap, lr, z_start, start_step: int,
              schedule=None) -> FlowArgs:
    """The flows' arguments at one grid point; `z_start` is the discrete state at the warm start
    `start_step` (`None` without a warm start)."""
    if not start_step:
        return FlowArgs(problem, lr, opt_map, schedule=schedule)
    return FlowArgs(problem, lr, opt_map, jnp.asarray(start_step, z_start.dtype), z_start, schedule)


def flow_chunk(flow: AbstractFlow, args: FlowArgs, carry: FlowCarry, k0, n_last, centres, *,
               n_blocks: int, every: int, eig: EigConfig, snapshots: bool, start_step: int = 0):
    """Integrate `flow` over `n_blocks * every` steps from time `k0` with `diffrax.diffeqsolve`.

    At each integer time `k` it records the distance of the flow's centre to GD's centre
    `m_k` (`centres[k - k0]`), the predicted loss and the flow's extras; per block, its
    sharpness. `y_final` is the state at time `n_last`. With a warm start the flow's carry is
    its state at `start_step` and integration starts there: blocks before it are zero-length
    solves, and what they record is masked on the host.
    """
    dtype = centres.dtype
    def field(t, y, a):
        # a frozen flow stands still: an adaptive solver then takes a few long steps per block
        # instead of running to its step cap on a diverged state (and, under `vmap`, holding
        # every other grid point's solver loop there)
        dy = flow.vector_field(t, y, a[0])
        return jax.tree.map(lambda d: jnp.where(a[3], jnp.zeros_like(d), d), dy)

    term = diffrax.ODETerm(field)
    controller = flow.stepsize_controller()

    def observe(t, y, a):
        fargs, ms, kb, _ = a
        i = jnp.clip(jnp.round(t - kb).astype(jnp.int32), 0, every - 1)
        obs = {"dist": _norm(fargs.params(flow.centre(y)) - ms[i]),
               "loss": flow.predicted_loss_at(t, y, fargs)}
        obs.update(flow.extras(y, fargs))
        return obs

    def block(state, b):
        y, U, y_final, num_steps, frozen = state
        kb = k0 + b * every
        sharp, U = flow.sharpness(y, args, U, jnp.asarray(kb, dtype), method=eig.method,
                                  max_iters=eig.max_iters)
        ms = jax.lax.dynamic_slice_in_dim(centres, b * every, every)
        t0 = jnp.asarray(kb, dtype)
        if start_step:  # the warm-started flow exists from `start_step` on
            t0 = jnp.clip(jnp.asarray(start_step, dtype), t0, t0 + every)
        # the save times stay the same for every grid point (batched ones would turn diffrax's
        # saves into scatters under `vmap`)
        t1 = jnp.asarray(kb + every, dtype)
        ts = jnp.maximum(jnp.asarray(kb, dtype) + jnp.arange(every, dtype=dtype), t0)
        t_last = jnp.clip(jnp.asarray(n_last, dtype), t0, t1)
        saveat = diffrax.SaveAt(subs=[
            diffrax.SubSaveAt(ts=ts, fn=observe),
            diffrax.SubSaveAt(ts=t_last[None]),
            diffrax.SubSaveAt(t1=True),
        ])
        sol = diffrax.diffeqsolve(
            term, flow.solver, t0=t0, t1=t1, dt0=flow.dt, y0=y,
            args=(args, ms, kb, frozen), saveat=saveat, stepsize_controller=controller,
            max_steps=flow.max_steps(every), throw=False,
        )
        recs, y_at_last, y1 = sol.ys
        y1 = jax.tree.map(lambda a: a[-1], y1)
        y_at_last = jax.tree.map(lambda a: a[0], y_at_last)
        in_block = (n_last >= kb) & (n_last <= kb + every)
        y_final = _where(in_block, _where(frozen, _nan_like(y_at_last), y_at_last), y_final)
        # A failed solve (e.g. the state became non-finite) ends the flow: what it records from
        # there on is non-finite, and its state is frozen at the last finite block start (a
        # finite state keeps every batched loop of the frozen lane short; it is never reported).
        failed = (sol.result != diffrax.RESULTS.successful) & ~frozen
        recs = jax.tree.map(lambda a: jnp.where(failed & ~jnp.isfinite(a), jnp.inf, a), recs)
        recs = jax.tree.map(lambda a: jnp.where(frozen, jnp.nan, a), recs)
        now_frozen = frozen | failed | ~_all_finite(y1)
        y1 = _where(now_frozen, y, y1)
        sharp = jnp.where(frozen, jnp.nan, sharp)
        out = {"sharpness": sharp, "snapshot": args.params(flow.centre(y)) if snapshots else None,
               "solver_result": jnp.where(frozen, diffrax.RESULTS.successful._value, sol.result._value)}
        return (y1, U, y_final, num_steps + sol.stats["num_steps"], now_frozen), (recs, out)

    (y, U, y_final, num_steps, frozen), (recs, per_block) = jax.lax.scan(block, tuple(carry),
                                                                          jnp.arange(n_blocks))
    if not snapshots:
        del per_block["snapshot"]
    return FlowCarry(y, U, y_final, num_steps, frozen), _merge(recs), per_block


# ---------------------------------------------------------------------------------------------
# the grid: one compiled program per run kind. The initial states are computed once per run,
# op by op (not compiled): compiling them would fuse their arithmetic differently and move the
# start by a rounding error, which the EoS dynamics then amplify over thousands of steps.
# ---------------------------------------------------------------------------------------------
def over_grid(fn, *grids):
    """`jax.vmap(fn)(*grids)` over the leading grid axis (named `GRID_AXIS`, for
    `rodflow._lax.branch`); a grid of one point is run unbatched and given its grid axis back.
    Used for the flows' chunks; the discrete run and the initial states stay
    `vmap`ped, which keeps the discrete run bit-identical to earlier versions (unbatched, XLA
    fuses it differently: same arithmetic, rounding-level differences)."""
    sizes = {a.shape[0] for a in jax.tree.leaves(grids)}
    if sizes == {1}:
        out = fn(*jax.tree.map(lambda a: a[0], grids))
        return jax.tree.map(lambda a: jnp.expand_dims(a, 0), out)
    return jax.vmap(fn, axis_name=GRID_AXIS)(*grids)


def grid_discrete_init(problem: Problem, opt_map: AbstractMap, lr, x0, U0, schedule=None,
                       eig: EigConfig | None = None) -> DiscreteCarry:
    return jax.vmap(lambda lr_, x_: discrete_init(problem, opt_map, lr_, x_, U0, schedule, eig),
                    axis_name=GRID_AXIS)(lr, x0)


def grid_warm_state(problem: Problem, opt_map: AbstractMap, lr, x0, start_step: int, schedule=None):
    """The discrete state `z_K` at the warm start `K = start_step` of every grid point, computed
    once for all flows (`K` iterations of the map, as [`FlowArgs.warm_started`][])."""
    return jax.vmap(lambda lr_, x_: FlowArgs(problem, lr_, opt_map, schedule=schedule)
                    .warm_started(x_, start_step).z_start)(lr, x0)


def grid_flow_init(flow: AbstractFlow, problem: Problem, opt_map: AbstractMap, lr, x0, z_start, U0,
                   start_step: int, schedule=None, eig: EigConfig | None = None) -> FlowCarry:
    def one(lr_, x_, z_):
        args = flow_args(problem, opt_map, lr_, z_, start_step, schedule)
        y0 = flow.init(x_, args)
        U = U0
        if cold_start(eig) and flow.measures_eigenvalues:
            U = converged_block(flow.sharpness, y0, args, U0, jnp.asarray(start_step, x_.dtype))
        return FlowCarry(y0, U, y0, jnp.zeros((), jnp.int32), jnp.zeros((), bool))

    return jax.vmap(one, axis_name=GRID_AXIS)(lr, x0, z_start)  # named: `branch`es in init stay conds


@eqx.filter_jit
def grid_discrete_chunk(problem: Problem, opt_map: AbstractMap, lr, carry, k0, n_last, **kw):
    """[`discrete_chunk`][] over the grid (leading axis of `lr` and `carry`), `vmap`ped over the
    named grid axis (the eigensolver's fallback is a `rodflow._lax.branch`)."""
    return jax.vmap(lambda lr_, c_: discrete_chunk(problem, opt_map, lr_, c_, k0, n_last, **kw),
                    axis_name=GRID_AXIS)(lr, carry)


@eqx.filter_jit
def grid_flow_chunk(flow: AbstractFlow, problem: Problem, opt_map: AbstractMap, lr, carry, k0, n_last,
                    centres, schedule=None, **kw):
    """[`flow_chunk`][] over the grid (leading axis of `lr`, `carry` and `centres`)."""

    def one(lr_, c_, m_):
        return flow_chunk(flow, FlowArgs(problem, lr_, opt_map, schedule=schedule), c_, k0, n_last, m_, **kw)

    return over_grid(one, lr, carry, centres)
