"""Control flow that stays cheap under `jax.vmap`."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gated(pred, fn, default):
    """`fn()` where `pred`, else `default`; `fn` runs only when needed.

    Like `lax.cond(pred, fn, lambda: default)`, but written as a `lax.while_loop` of at most
    one iteration. Unbatched, `fn` runs iff `pred`. Under `jax.vmap` a `lax.cond` with a batched
    predicate turns into a `select` that evaluates *both* branches for every lane; this loop
    instead runs `fn` (for all lanes) only when *some* lane needs it, and not at all otherwise.
    """

    def body(carry):
        _, out = carry
        new = fn()
        return jnp.asarray(True), jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, out)

    _, out = jax.lax.while_loop(lambda c: pred & ~c[0], body, (jnp.asarray(False), default))
    return out


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
    selects its own. A single run is one lane, so only its branch runs. This replaced a
    one-iteration `lax.while_loop` per side ([`gated`][]), which did the same under `vmap` but,
    measured on `mlp-digits` (float64, 2-core CPU, `benchmarks/results/rod_profile.json`), made
    the rod's vector field 2.3x slower unbatched; a `cond` on a batched predicate would instead
    run both sides in every lane."""

    def both():
        return jax.tree.map(lambda a, b: jnp.where(pred, a, b), true_fn(), false_fn())

    all_true, all_false = ~any_lane(~pred), ~any_lane(pred)
    return jax.lax.cond(all_true, true_fn, lambda: jax.lax.cond(all_false, false_fn, both))
