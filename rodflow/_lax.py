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


def select_gated(pred, true_fn, false_fn):
    """`true_fn()` where `pred`, else `false_fn()` (pytrees of the same structure): each branch
    runs through [`gated`][], so under `jax.vmap` a branch is evaluated only when some lane of
    the batch needs it (a `lax.cond` would evaluate both for every lane)."""
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(true_fn))
    on = gated(pred, true_fn, zeros)
    off = gated(~pred, false_fn, zeros)
    return jax.tree.map(lambda p, q: jnp.where(pred, p, q), on, off)
