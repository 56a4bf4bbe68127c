"""Control flow that stays cheap under `jax.vmap`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

GRID_AXIS = "grid"
"""The name of the engine's `vmap` axis over grid points (see [`any_lane`][])."""


def any_lane(pred):
    """`pred` for some lane of the grid: inside the engine's `vmap` over grid points (axis
    [`GRID_AXIS`][]) an unbatched `any` over the lanes; outside it (a single run, or a user's own
    `vmap`) `pred` itself."""
    try:
        return jax.lax.psum(jnp.asarray(pred, jnp.int32), GRID_AXIS) > 0
    except NameError:  # the grid axis is not bound here
        return pred


def branch(pred, true_fn, false_fn):
    """`true_fn()` where `pred`, else `false_fn()` (pytrees of the same structure), evaluating
    only what some lane needs.

    `lax.cond`s on predicates that are the same for every lane ([`any_lane`][]): when every lane
    takes the same side, only that side runs; when the lanes disagree, both run and each lane
    selects its own. A single run is one lane, so only its branch runs (a `cond` on a batched
    predicate would instead run both sides in every lane).

    Not a `lax.while_loop` of at most one iteration per side, as an earlier version had it: a
    side that does not depend on the loop's carry is loop-invariant, and XLA's loop-invariant
    code motion hoists it out of the loop, so it ran on every call, needed or not: the
    eigensolver's power-iteration fallback (40 Hessian-vector products) ran after every LOBPCG
    call, and the rod's vector field with that switch was 2.3x slower than with this one
    (`benchmarks/results/rod_profile.json`), which the same hoisting of both sides explains."""

    def both():
        return jax.tree.map(lambda a, b: jnp.where(pred, a, b), true_fn(), false_fn())

    all_true, all_false = ~any_lane(~pred), ~any_lane(pred)
    return jax.lax.cond(all_true, true_fn, lambda: jax.lax.cond(all_false, false_fn, both))
