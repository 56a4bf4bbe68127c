"""Toy potentials: closed forms to test against, and minimal edge-of-stability examples."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._problem import Problem
from ._registry import register


class _Quadratic(eqx.Module):
    eigenvalues: Float[Array, " p"]

    def __call__(self, x):
        return 0.5 * jnp.sum(self.eigenvalues * x**2)


class _Quartic(eqx.Module):
    def __call__(self, p):
        x, y = p[0], p[1]
        return 0.25 * (x**2 * y**2 - 1.0) ** 2


class _EoSToy(eqx.Module):
    a: float
    x_star: float

    def __call__(self, p):
        x, y = p[0], p[1]
        return 0.5 * self.a * (x - self.x_star) ** 2 + 0.5 * jnp.exp(x) * y**2


def _floats(values, name):
    try:
        return tuple(float(v) for v in (values.split(",") if isinstance(values, str) else values))
    except (TypeError, ValueError) as e:
        raise ValueError(f"option `{name}` must be a comma-separated list of numbers") from e


@register("quadratic")
def quadratic(eigenvalues="1,10,30", x0="1,1,1") -> Problem:
    """`L(x) = 1/2 sum_i lambda_i x_i^2` (diagonal Hessian with the chosen eigenvalues).

    GD is stable iff `lr * max(lambda) < 2`: no self-stabilisation, the textbook threshold.
    """
    lam = jnp.asarray(_floats(eigenvalues, "eigenvalues"))
    x = jnp.asarray(_floats(x0, "x0"))
    if x.shape != lam.shape:
        raise ValueError(f"option `x0` has {x.size} entries but `eigenvalues` has {lam.size}; "
                         "give one starting coordinate per eigenvalue.")
    return Problem(_Quadratic(lam), x.astype(lam.dtype), "quadratic", lr_hint=0.06)


@register("quartic")
def quartic(x0="3,0.1") -> Problem:
    """`L(x, y) = (x^2 y^2 - 1)^2 / 4`: a minimal self-stabilising EoS example (use lr 0.2)."""
    x = jnp.asarray(_floats(x0, "x0"))
    if x.shape != (2,):
        raise ValueError("option `x0` of `quartic` needs two numbers, e.g. '3,0.1'.")
    return Problem(_Quartic(), x, "quartic", lr_hint=0.2)


@register("eos-toy")
def eos_toy(a=0.25, x_star=1.8, x0="0,0.1") -> Problem:
    """`L(x, y) = a/2 (x - x*)^2 + exp(x) y^2 / 2`.

    The sharpness along `y` is `exp(x)`; gradient flow drives `x -> x*`, so the sharpness rises
    (progressive sharpening) to `exp(x*)`. With `lr > 2 exp(-x*)` GD enters the edge of
    stability: `y` oscillates and the term `exp(x) y^2 / 2` pushes `x` back until
    `exp(x) ~ 2 / lr`, where GD settles into a period-2 orbit with `|y| = rho`,
    `rho^2 = 2 a (x* - x) / exp(x)`. Default `lr` hint 0.4 (threshold `x = log 5 = 1.61 < x* = 1.8`;
    GD's sharpness crosses `2/lr` near step 20).
    """
    x = jnp.asarray(_floats(x0, "x0"))
    if x.shape != (2,):
        raise ValueError("option `x0` of `eos-toy` needs two numbers, e.g. '0,0.5'.")
    return Problem(_EoSToy(float(a), float(x_star)), x, "eos-toy", lr_hint=0.4)
