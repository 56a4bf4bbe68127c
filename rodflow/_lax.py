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
