"""Compiled runs: the discrete optimiser (`lax.scan`) and the flows (`diffrax.diffeqsolve`).

A run is cut into *chunks* of whole *blocks*. A block is `every` steps: at its start the
sharpness is measured (warm-started eigensolver, or the flow's own estimate), then the run
advances `every` steps, recording scalar observables at each integer step. Only scalars, the
sharpness and (optionally) block-start snapshots leave the device; GD's centres `m_k` for the
current chunk are kept on the device and handed to the flows, which compare against them
inside the compiled program.

Each chunk function is pure and jit-compiled once per run kind; the step size is traced, so the
same compiled program serves every `lr` (and `jax.vmap` over `lr` works).
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._maps import AbstractMap
from ._problem import Problem
from .flows._base import AbstractFlow, FlowArgs


class EigConfig(eqx.Module):
    """Eigensolver settings for the sharpness measurements."""

    k: int = eqx.field(static=True, default=1)
    method: str = eqx.field(static=True, default="auto")
    max_iters: int = eqx.field(static=True, default=40)


def _where(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _norm(x):
    return jnp.linalg.norm(x)


# ---------------------------------------------------------------------------------------------
# discrete optimiser
# ---------------------------------------------------------------------------------------------
def discrete_init(problem: Problem, opt_map: AbstractMap, lr, x0, U0):
    """Carry of the discrete run at step 0."""
    opt = opt_map.optimizer(lr)
    x1 = optax.apply_updates(x0, opt.update(jax.grad(problem.loss_flat)(x0), opt.init(x0), x0)[0])
    return {"x": x0, "opt_state": opt.init(x0), "U": U0, "m0": 0.5 * (x0 + x1), "x_final": x0}


@eqx.filter_jit
def discrete_chunk(problem: Problem, opt_map: AbstractMap, lr, carry, k0, n_last, *,
                   n_blocks: int, every: int, eig: EigConfig, snapshots: bool):
    """Advance the discrete optimiser `n_blocks * every` steps from global step `k0`.

    Records, for each step `k`: `loss = L(x_k)`, `loss_next = L(x_{k+1})`,
    `disp = |m_k - m_0|` with `m_k = (x_k + x_{k+1})/2`, and GD's own rod length
    `rho = |x_{k+1} - x_k| / 2`; per block: top-k sharpness at the
    block start. Returns the centres `m_k` of the chunk (for the flows) without sending them
    to the host. `n_last` is the last step that counts (`x_final` is the iterate there).
    """
    opt = opt_map.optimizer(lr)
    loss_fn = problem.loss_flat

    def step(state, k):
        x, opt_state, x_final = state
        loss, g = jax.value_and_grad(loss_fn)(x)
        updates, new_opt_state = opt.update(g, opt_state, x)
        x1 = optax.apply_updates(x, updates)
        m = 0.5 * (x + x1)
        rec = {"loss": loss, "loss_next": loss_fn(x1), "disp": _norm(m - carry["m0"]),
               "rho": 0.5 * _norm(x1 - x)}
        x_final = jnp.where(k == n_last, x, x_final)
        return (x1, new_opt_state, x_final), (rec, m)

    def block(state, b):
        x, opt_state, U, x_final = state
        # the optimiser's effective sharpness at step k (for GD the top Hessian eigenvalue; for
        # Adam that of P^{-1} H)
        vals, U = opt_map.sharpness(problem, opt_map.pack(problem, x, opt_state), lr, U,
                                    (k0 + b * every).astype(x.dtype), method=eig.method,
                                    max_iters=eig.max_iters)
        out = {"sharpness": vals, "snapshot": x if snapshots else None}
        ks = k0 + b * every + jnp.arange(every)
        (x, opt_state, x_final), (recs, ms) = jax.lax.scan(step, (x, opt_state, x_final), ks)
        return (x, opt_state, U, x_final), (recs, ms, out)

    state = (carry["x"], carry["opt_state"], carry["U"], carry["x_final"])
    (x, opt_state, U, x_final), (recs, ms, per_block) = jax.lax.scan(
        block, state, jnp.arange(n_blocks)
    )
    if not snapshots:
        del per_block["snapshot"]
    recs = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), recs)
    ms = ms.reshape(-1, ms.shape[-1])
    new_carry = {"x": x, "opt_state": opt_state, "U": U, "m0": carry["m0"], "x_final": x_final}
    return new_carry, recs, per_block, ms


# ---------------------------------------------------------------------------------------------
# flows
# ---------------------------------------------------------------------------------------------
def flow_init(flow: AbstractFlow, args: FlowArgs, x0, U0, start_step: int = 0):
    """Carry of a flow at time `start_step`: started from the discrete run's state at that step
    (warm start; 0: from `x0`). Its integration starts there (see [`flow_chunk`][])."""
    y0 = flow.init(x0, args.warm_started(x0, start_step))
    return {"y": y0, "U": U0, "y_final": y0, "num_steps": jnp.zeros((), jnp.int32)}


@eqx.filter_jit
def flow_chunk(flow: AbstractFlow, args: FlowArgs, carry, k0, n_last, centres, *,
               n_blocks: int, every: int, eig: EigConfig, snapshots: bool, start_step: int = 0):
    """Integrate `flow` over `n_blocks * every` steps from time `k0` with `diffrax.diffeqsolve`.

    At each integer time `k` it records the distance of the flow's centre to GD's centre
    `m_k` (`centres[k - k0]`), the predicted loss and the flow's extras; per block, its
    sharpness. `y_final` is the state at time `n_last`. With a warm start the flow's carry is
    its state at `start_step` and integration starts there: blocks before it are zero-length
    solves, and what they record is masked on the host.
    """
    dtype = centres.dtype
    term = diffrax.ODETerm(lambda t, y, a: flow.vector_field(t, y, a[0]))
    controller = flow.stepsize_controller()

    def observe(t, y, a):
        fargs, ms, kb = a
        i = jnp.clip(jnp.round(t - kb).astype(jnp.int32), 0, every - 1)
        obs = {"dist": _norm(fargs.params(flow.centre(y)) - ms[i]), "loss": flow.predicted_loss(y, fargs)}
        obs.update(flow.extras(y, fargs))
        return obs

    def block(state, b):
        y, U, y_final, num_steps = state
        kb = k0 + b * every
        sharp, U = flow.sharpness(y, args, U, jnp.asarray(kb, dtype), method=eig.method,
                                  max_iters=eig.max_iters)
        ms = jax.lax.dynamic_slice_in_dim(centres, b * every, every)
        t0 = jnp.asarray(kb, dtype)
        if start_step:  # the warm-started flow exists from `start_step` on
            t0 = jnp.clip(jnp.asarray(start_step, dtype), t0, t0 + every)
        ts = jnp.maximum(jnp.asarray(kb, dtype) + jnp.arange(every, dtype=dtype), t0)
        t_last = jnp.clip(jnp.asarray(n_last, dtype), t0, kb + every)
        saveat = diffrax.SaveAt(subs=[
            diffrax.SubSaveAt(ts=ts, fn=observe),
            diffrax.SubSaveAt(ts=t_last[None]),
            diffrax.SubSaveAt(t1=True),
        ])
        t1 = jnp.asarray(kb + every, dtype)
        sol = diffrax.diffeqsolve(
            term, flow.solver, t0=t0, t1=t1, dt0=flow.dt, y0=y, args=(args, ms, kb),
            saveat=saveat, stepsize_controller=controller, max_steps=flow.max_steps(every),
            throw=False,
        )
        recs, y_at_last, y1 = sol.ys
        y1 = jax.tree.map(lambda a: a[-1], y1)
        y_at_last = jax.tree.map(lambda a: a[0], y_at_last)
        in_block = (n_last >= kb) & (n_last <= kb + every)
        y_final = _where(in_block, y_at_last, y_final)
        # A failed solve (e.g. the state became non-finite) poisons the rest of the run.
        failed = sol.result != diffrax.RESULTS.successful
        y1 = jax.tree.map(lambda a: jnp.where(failed, jnp.nan, a), y1)
        recs = jax.tree.map(lambda a: jnp.where(failed & ~jnp.isfinite(a), jnp.inf, a), recs)
        out = {"sharpness": sharp, "snapshot": args.params(flow.centre(y)) if snapshots else None}
        return (y1, U, y_final, num_steps + sol.stats["num_steps"]), (recs, out)

    state = (carry["y"], carry["U"], carry["y_final"], carry["num_steps"])
    (y, U, y_final, num_steps), (recs, per_block) = jax.lax.scan(block, state, jnp.arange(n_blocks))
    if not snapshots:
        del per_block["snapshot"]
    recs = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), recs)
    return {"y": y, "U": U, "y_final": y_final, "num_steps": num_steps}, recs, per_block


# ---------------------------------------------------------------------------------------------
# batched (vmapped) versions: one compiled program for a whole grid of step sizes / seeds
# ---------------------------------------------------------------------------------------------
TRACE_COUNTS: dict[str, int] = {"discrete_batched": 0, "flow_batched": 0}


@eqx.filter_jit
def discrete_init_batched(problem: Problem, opt_map: AbstractMap, lr, x0, U0):
    return jax.vmap(lambda lr_, x_: discrete_init(problem, opt_map, lr_, x_, U0))(lr, x0)


@eqx.filter_jit
def flow_init_batched(flow: AbstractFlow, problem: Problem, opt_map: AbstractMap, lr, x0, U0,
                      start_step: int = 0):
    def one(lr_, x_):
        return flow_init(flow, FlowArgs(problem, lr_, opt_map), x_, U0, start_step)

    return jax.vmap(one)(lr, x0)


@eqx.filter_jit
def discrete_chunk_batched(problem: Problem, opt_map: AbstractMap, lr, carry, k0, n_last, **kw):
    """[`discrete_chunk`][] vmapped over a leading grid axis of `lr` and `carry`."""
    TRACE_COUNTS["discrete_batched"] += 1
    return jax.vmap(lambda lr_, c_: discrete_chunk(problem, opt_map, lr_, c_, k0, n_last, **kw))(lr, carry)


@eqx.filter_jit
def flow_chunk_batched(flow: AbstractFlow, problem: Problem, opt_map: AbstractMap, lr, carry, k0, n_last,
                       centres, **kw):
    """[`flow_chunk`][] vmapped over a leading grid axis of `lr`, `carry` and `centres`."""
    TRACE_COUNTS["flow_batched"] += 1

    def one(lr_, c_, m_):
        return flow_chunk(flow, FlowArgs(problem, lr_, opt_map), c_, k0, n_last, m_, **kw)

    return jax.vmap(one)(lr, carry, centres)
