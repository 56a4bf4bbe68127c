"""Control flow that stays cheap under `jax.vmap`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

GRID_AXIS = "grid"
"""The name of the engine's `vmap` axis over grid points (see [`branch`][])."""


def branch(pred, true_fn, false_fn):
    """`true_fn()` where `pred`, else `false_fn()` (pytrees of the same structure), evaluating
    only what some lane needs.

    `lax.cond`s on predicates that are the same for every lane (counts of the lanes where `pred`
    holds, a sum over the engine's grid axis [`GRID_AXIS`][]): when every lane
    takes the same side, only that side runs; when the lanes disagree, both run and each lane
    selects its own (a `cond` on a batched predicate would instead run both sides in every
    lane). Outside the grid axis (a single run) it is a plain `lax.cond`: the program holds
    each side once, with no `both` (which would compile both sides a second time: Central
    Flow's cone problem and third-derivative terms, the rod's two ends; on `mlp-digits` that
    took Central Flow's compile time from 13.5 to about 11 s and the rod's from 3.0 to 2.4 s,
    `benchmarks/results/compile_times.json`, with bit-identical results).

    Not a `lax.while_loop` of at most one iteration per side, as an earlier version had it: a
    side that does not depend on the loop's carry is loop-invariant, and XLA's loop-invariant
    code motion hoists it out of the loop, so it ran on every call, needed or not: the
    eigensolver's power-iteration fallback (40 Hessian-vector products) ran after every LOBPCG
    call, and the rod's vector field with that switch was 2.3x slower than with this one
    (`benchmarks/results/rod_profile.json`), which the same hoisting of both sides explains."""

    try:
        lanes_true = jax.lax.psum(jnp.asarray(pred, jnp.int32), GRID_AXIS)
    except NameError:  # one lane (a single run, or a user's own vmap): a plain cond
        return jax.lax.cond(pred, true_fn, false_fn)

    def both():
        return jax.tree.map(lambda a, b: jnp.where(pred, a, b), true_fn(), false_fn())

    lanes = jax.lax.psum(1, GRID_AXIS)
    return jax.lax.cond(lanes_true == lanes, true_fn,
                        lambda: jax.lax.cond(lanes_true == 0, false_fn, both))
