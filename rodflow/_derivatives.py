"""Derivatives from autodiff: gradients, Hessian-vector products and the rod-curvature term.

All functions act on a flat parameter vector `x` and a scalar function `f(x)`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

Vec = Float[Array, " p"]


def hvp(f: Callable[[Vec], Array], x: Vec, v: Vec) -> Vec:
    """Hessian-vector product `H(x) v` (forward-over-reverse: `jax.jvp` of `jax.grad`)."""
    return jax.jvp(jax.grad(f), (x,), (v,))[1]


def rod_curvature(f: Callable[[Vec], Array], x: Vec, v: Vec) -> Array:
    """`kappa(x, v) = v . H(x) v`, the curvature of `f` along `v` at `x`."""
    return jnp.vdot(v, hvp(f, x, v))


def rod_curvature_grad(f: Callable[[Vec], Array], x: Vec, v: Vec) -> Vec:
    """`grad_x kappa(x, v) = grad_x (v . H(x) v)`: the third-derivative term `D^3 f[v, v, .]`.

    Computed as `jax.grad` of `v . jvp(grad f)(x; v)` (reverse-over-forward-over-reverse).
    """
    return jax.grad(lambda y: rod_curvature(f, y, v))(x)


def directional_second(fn: Callable[[Vec], Vec], x: Vec, v: Vec) -> Vec:
    """Second directional derivative `D^2 fn(x)[v, v]` of a vector map (two nested `jax.jvp`)."""
    return jax.jvp(lambda y: jax.jvp(fn, (y,), (v,))[1], (x,), (v,))[1]
