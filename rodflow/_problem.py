"""What is optimised: a scalar loss over a pytree of parameters, and a starting point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree


class Problem(eqx.Module):
    """A loss over a pytree of parameters, plus initial parameters.

    Every run in `rodflow` works on the *flat* parameter vector `x = ravel(params)`: the flows'
    states, the rod and all distances live in one vector space, which keeps every equation a
    one-liner. `loss_flat(x) = loss(unravel(x))` is what the numerics call; the user-facing
    `loss` and `params0` keep their pytree (Equinox model) structure.

    **Arguments:**

    - `loss`: `loss(params) -> scalar`. Any data it closes over is treated as a constant;
      built-in problems pass their data as an `eqx.Module` callable so it stays a traced array.
    - `params0`: initial parameters, any pytree (an Equinox model is fine: its non-array
      leaves are kept fixed).
    - `name`: used in tables and files.
    - `lr_hint`: a step size at which GD reaches the edge of stability (built-in problems).
    - `init`: optional `init(key) -> params`, used by sweeps over initialisation seeds.
    """

    loss: Callable[[PyTree], Any]
    params0: PyTree
    name: str = eqx.field(static=True, default="custom")
    lr_hint: float | None = eqx.field(static=True, default=None)
    init: Callable[..., PyTree] | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        leaves = jax.tree_util.tree_leaves(eqx.filter(self.params0, eqx.is_inexact_array))
        if not leaves:
            raise ValueError(
                "`params` has no floating-point arrays to optimise; pass a pytree of float "
                "arrays (e.g. `jnp.zeros(3)` or an Equinox model)."
            )

    # -- flat view ------------------------------------------------------------------------------
    def _split(self):
        return eqx.partition(self.params0, eqx.is_inexact_array)

    @property
    def x0(self) -> Float[Array, " p"]:
        dynamic, _ = self._split()
        return ravel_pytree(dynamic)[0]

    @property
    def dim(self) -> int:
        return int(self.x0.shape[0])

    @property
    def dtype(self):
        return self.x0.dtype

    def unravel(self, x: Float[Array, " p"]) -> PyTree:
        """Flat vector -> parameter pytree (same structure as `params0`)."""
        dynamic, static = self._split()
        return eqx.combine(ravel_pytree(dynamic)[1](x), static)

    def ravel(self, params: PyTree) -> Float[Array, " p"]:
        dynamic = eqx.filter(params, eqx.is_inexact_array)
        return ravel_pytree(dynamic)[0]

    def loss_flat(self, x: Float[Array, " p"]) -> Float[Array, ""]:
        return jnp.asarray(self.loss(self.unravel(x)))

    def with_params0(self, params0: PyTree) -> Problem:
        return eqx.tree_at(lambda p: p.params0, self, params0)


def as_problem(loss_or_problem, params: PyTree | None = None, *, name: str | None = None) -> Problem:
    """Build (and validate) a [`Problem`][] from `loss(params)` and `params`.

    Raises `ValueError` naming the argument and the fix when the loss is not callable, returns
    something other than a real scalar, or fails on `params` (a mismatched pytree).
    """
    if isinstance(loss_or_problem, Problem):
        problem = loss_or_problem
        if params is not None:
            _check_same_structure(problem.params0, params)
            problem = problem.with_params0(params)
        if name is not None:
            problem = Problem(problem.loss, problem.params0, name, problem.lr_hint, problem.init)
    else:
        if not callable(loss_or_problem):
            raise ValueError(
                f"`loss` must be a callable `loss(params) -> scalar` or a rodflow.Problem, got "
                f"{type(loss_or_problem).__name__}."
            )
        if params is None:
            raise ValueError("`params` is required when `loss` is a function: pass the initial "
                             "parameters, e.g. `rodflow.compare(loss, params0, lr=...)`.")
        problem = Problem(loss_or_problem, params, name or "custom")
    _check_loss(problem)
    return problem


def _check_same_structure(reference: PyTree, params: PyTree) -> None:
    ref = jax.tree_util.tree_structure(eqx.filter(reference, eqx.is_inexact_array))
    new = jax.tree_util.tree_structure(eqx.filter(params, eqx.is_inexact_array))
    if ref != new:
        raise ValueError(
            "`params` does not match the problem's parameter pytree: expected structure "
            f"{ref}, got {new}. Pass parameters built the same way as `problem.params0`."
        )
    for a, b in zip(jax.tree_util.tree_leaves(eqx.filter(reference, eqx.is_inexact_array)),
                    jax.tree_util.tree_leaves(eqx.filter(params, eqx.is_inexact_array))):
        if a.shape != b.shape:
            raise ValueError(
                f"`params` has a leaf of shape {b.shape} where the problem expects {a.shape}; "
                "pass parameters built the same way as `problem.params0`."
            )


def _check_loss(problem: Problem) -> None:
    try:
        out = eqx.filter_eval_shape(problem.loss, problem.params0)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"`loss(params)` failed on the given `params` ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Check that `params` has the structure "
            "and shapes your loss expects."
        ) from e
    if not hasattr(out, "shape") or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"`loss(params)` must return a scalar, got shape {shape}. Reduce it, e.g. with "
            "`jnp.mean(...)` or `.sum()`."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"`loss(params)` must return a real floating-point scalar, got {out.dtype}.")
