"""Optax optimisers as maps on the joint state `z = (flat params, flat float state)`.

**Layout of z** ([`AbstractOptaxMap`][]): the flat parameters first, then the floating-point
leaves of the optax state in tree order, except that leaves named `nu` (second moments) come
last, so that a flow can keep them as a smooth variable (`z = (x, mu, ..., nu)`, typed as
[`MapState`][]). Integer leaves (Adam's step `count`) are not part of `z`: they are the map's
time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._problem import Problem
from ._base import AbstractMap, MapState


def _is_nu(path) -> bool:
    return any(getattr(k, "name", None) == "nu" for k in path)


class _Layout(NamedTuple):
    treedef: Any
    paths: list
    shapes: list
    dtypes: list
    float_order: list  # indices of the float leaves in z order (non-nu first, nu last)
    n_nu: int


class AbstractOptaxMap(AbstractMap):
    """An optax optimiser (`optimizer(lr)`) as a map on `z = (flat params, flat float state)`.

    The discrete run executes the optimiser; `delta` runs one of its updates on the state
    unpacked from `z`, with integer leaves (step counts) set to the time `t` (as a float, so the
    map is smooth in time).
    """

    # -- layout ----------------------------------------------------------------------------------
    def _layout(self, problem: Problem) -> _Layout:
        x = jax.ShapeDtypeStruct((problem.dim,), problem.dtype)
        state = jax.eval_shape(self.optimizer(1.0).init, x)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
        paths = [p for p, _ in leaves]
        shapes = [tuple(v.shape) for _, v in leaves]
        dtypes = [v.dtype for _, v in leaves]
        floats = [i for i, d in enumerate(dtypes) if jnp.issubdtype(d, jnp.floating)]
        nu = [i for i in floats if _is_nu(paths[i])]
        rest = [i for i in floats if i not in nu]
        n_nu = int(sum(int(np.prod(shapes[i])) for i in nu))
        return _Layout(treedef, paths, shapes, dtypes, rest + nu, n_nu)

    def split(self, problem, z) -> MapState:
        n, n_nu = z.shape[0], self._layout(problem).n_nu
        return MapState(z[: problem.dim], z[problem.dim: n - n_nu], z[n - n_nu:])

    def pack(self, problem, x, opt_state):
        lay = self._layout(problem)
        leaves = jax.tree.leaves(opt_state)
        return jnp.concatenate([x] + [jnp.ravel(leaves[i]).astype(x.dtype) for i in lay.float_order])

    def unpack(self, problem, z, t=None):
        """`(x, optax state)` from `z`; integer leaves become the time `t` (0 if `None`).

        Second moments (`nu` leaves) are clamped below at `sqrt(tiny)` of the dtype (1.5e-154 in
        float64): on true optimiser states this changes nothing measurable (only exact zeros,
        where the gradient has always been 0), but it keeps `sqrt(nu)` differentiable (the rod's
        Jacobian-vector products) and defines the map for rod ends with `nu < 0`."""
        lay = self._layout(problem)
        x = z[: problem.dim]
        leaves: list = [None] * len(lay.shapes)
        off = problem.dim
        for i in lay.float_order:
            n = int(np.prod(lay.shapes[i]))
            leaves[i] = z[off: off + n].reshape(lay.shapes[i]).astype(lay.dtypes[i])
            if _is_nu(lay.paths[i]):  # see below
                leaves[i] = jnp.maximum(leaves[i], jnp.sqrt(jnp.finfo(lay.dtypes[i]).tiny))
            off += n
        for i, d in enumerate(lay.dtypes):
            if leaves[i] is None:
                leaves[i] = (jnp.zeros(lay.shapes[i], d) if t is None
                             else jnp.broadcast_to(jnp.asarray(t, z.dtype), lay.shapes[i]))
        return x, jax.tree_util.tree_unflatten(lay.treedef, leaves)

    def nu_leaf(self, problem, state):
        """The second-moment leaf (`nu`) of an unpacked optax state."""
        lay = self._layout(problem)
        leaves = jax.tree.leaves(state)
        return [leaves[i] for i in lay.float_order if _is_nu(lay.paths[i])][0]

    def init_state(self, problem, x0, lr):
        return self.pack(problem, x0, self.optimizer(lr).init(x0))

    def delta(self, problem, z, lr, t=None):
        x, state = self.unpack(problem, z, t)
        g = jax.grad(problem.loss_flat)(x)
        updates, new_state = self.optimizer(lr).update(g, state, x)
        new_z = self.pack(problem, x, new_state)
        return jnp.concatenate([updates.astype(z.dtype), new_z[problem.dim:] - z[problem.dim:]])


class OptaxMap(AbstractOptaxMap):
    """Any optax optimiser as a map on `z = (flat params, flat float state)`.

    `factory(lr) -> optax.GradientTransformation` builds the optimiser (e.g.
    `lambda lr: optax.sgd(lr, momentum=0.9)`). Without more knowledge the effective sharpness
    is the top Hessian eigenvalue and the threshold `2/lr`; the named optimisers know better.
    It has no capability: flows that need one (second-order form, plain gradient steps) do not
    run with it.
    """

    name: ClassVar[str] = "optax"
    factory: Callable[[Any], optax.GradientTransformation] = eqx.field(static=True, default=None)

    def optimizer(self, lr):
        return self.factory(lr)

    def threshold(self, lr):
        return 2.0 / lr
