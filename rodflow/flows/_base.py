from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._maps import AbstractMap, GradientDescent, check_final
from .._problem import Problem
from .._schedule import scaled


class FlowArgs(eqx.Module):
    """What a vector field needs besides `(t, y)`: the problem, the map and the step size.

    Flows live on the map's joint state `z` (`z = x` for GD): `delta(z, t)` is `F(z) - z` at
    step `t` (only bias-corrected optimisers depend on `t`), `params(z)` the parameters of `z`,
    `init_state(x0)` the state `z0` of a run started at `x0`.

    Flows start at step `start` (0 unless the run has a warm start, see `compare(start_step=)`):
    `init_state(x0)` is then the discrete run's state `z_start` at that step, and a flow's first
    step is `delta(z_start, start)`.

    **Schedules.** With `schedule` (a static callable `t -> float`, e.g. an optax schedule) the
    step size at step `t` is `lr * schedule(t)` ([`lr_at`][]): `lr` is then the grid point's
    scale. A flow at time `t` models the pair `(z_t, z_{t+1})` and uses `lr_at(t + 1/2)` (as
    `delta(z, t + 0.5)` does); the threshold at integer step `k` is `threshold(lr_at(k))`.
    """

    problem: Problem
    lr: Float[Array, ""]
    map: AbstractMap = GradientDescent()
    start: Float[Array, ""] | float = 0.0
    z_start: Float[Array, " n"] | None = None
    schedule: Callable | None = eqx.field(static=True, default=None)

    def lr_at(self, t=None):
        """The step size at (fractional) step `t` (`t=None`: step 0): `lr * schedule(t)`, or
        `lr` itself without a schedule."""
        return scaled(self.lr, self.schedule, t)

    def delta(self, x, t=None):
        return self.map.delta(self.problem, x, self.lr_at(t), t)

    def params(self, z):
        return self.map.params(self.problem, z)

    def init_state(self, x0):
        if self.z_start is not None:
            return self.z_start
        return self.map.init_state(self.problem, x0, self.lr)

    def warm_started(self, x0, steps: int) -> FlowArgs:
        """These arguments with the discrete run's state after `steps` steps from `x0` as the
        flows' start (`steps` iterations of the map, the discrete run's own updates)."""
        if steps == 0:
            return self
        z0 = self.map.init_state(self.problem, x0, self.lr)
        dtype = z0.dtype
        z = jax.lax.fori_loop(0, steps, lambda k, z: z + self.delta(z, k.astype(dtype)), z0)
        return FlowArgs(self.problem, self.lr, self.map, jnp.asarray(steps, dtype), z, self.schedule)


class AbstractFlow(eqx.Module):
    """A continuous-time model of the optimiser: a vector field `f(t, y, args)` for diffrax.

    Time counts optimiser steps (flow time 1 = one step). A flow knows its equations and its
    observables (centre, predicted loss, sharpness); it knows nothing of metrics, files or plots.

    Numerical integration is configured on the flow: `solver` (any diffrax solver), `dt`
    (the step, or the initial step for adaptive solvers), and `rtol`/`atol` (set `rtol` to use
    an adaptive `diffrax.PIDController`; leave it `None` for fixed steps).
    """

    name: eqx.AbstractClassVar[str]
    requires: eqx.AbstractClassVar[tuple[type, ...]]
    # whether `sharpness` measures with the eigensolver (the rods report their own curvature)
    measures_eigenvalues: ClassVar[bool] = True
    solver: eqx.AbstractVar[diffrax.AbstractSolver]
    dt: eqx.AbstractVar[float]
    rtol: eqx.AbstractVar[float | None]
    atol: eqx.AbstractVar[float | None]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        check_final(cls, AbstractFlow)

    def __check_init__(self):
        check_solver_config(self)

    def unsupported(self, opt_map: AbstractMap) -> str | None:
        """`None` if this flow can model `opt_map`, else a short phrase naming the capability
        it lacks (the first of `requires`, the map capability classes the flow needs; `()`: any
        map). Checked once, before anything is traced."""
        for capability in self.requires:
            if not isinstance(opt_map, capability):
                return f"needs {capability.capability}; {opt_map.name} does not provide it"
        return None

    def check_supported(self, opt_map: AbstractMap, label: str | None = None) -> None:
        """A `ValueError` naming the flow (by `label`, default its name), the optimiser and what
        is missing (see [`unsupported`][])."""
        missing = self.unsupported(opt_map)
        if missing:
            raise ValueError(f"flow {label or self.name!r} does not support optimizer {opt_map.name!r}: "
                             f"{missing}.")

    @abc.abstractmethod
    def init(self, x0: Float[Array, " p"], args: FlowArgs) -> PyTree:
        """The flow's state at `t = args.start` (0 without a warm start) for a discrete run
        started at `x0`; `args.init_state(x0)` is the discrete state at that step."""

    @abc.abstractmethod
    def vector_field(self, t, y: PyTree, args: FlowArgs) -> PyTree:
        """`dy/dt`."""

    @abc.abstractmethod
    def centre(self, y: PyTree) -> Float[Array, " p"]:
        """The point (in the map's state space `z`) whose parameters `args.params(centre(y))` are
        compared with the discrete centre `m_t = (x_t + x_{t+1}) / 2`."""

    @abc.abstractmethod
    def predicted_loss(self, y: PyTree, args: FlowArgs) -> Float[Array, ""]:
        """The flow's prediction of GD's loss (averaged over an oscillation)."""

    def predicted_loss_at(self, t, y: PyTree, args: FlowArgs) -> Float[Array, ""]:
        """The predicted loss at time `t` (what the runs record). Default: [`predicted_loss`][];
        a flow whose prediction depends on the time (the step size under a schedule, the
        optimiser's bias correction) overrides it."""
        return self.predicted_loss(y, args)

    @abc.abstractmethod
    def cost_per_rhs(self) -> dict[str, int]:
        """Gradient evaluations and Hessian-vector products per vector-field evaluation."""

    def sharpness(self, y: PyTree, args: FlowArgs, U0, t=None, *, method: str = "auto", max_iters: int = 40):
        """Predicted (effective) sharpness and updated eigenvector warm start. Default: the map's
        effective sharpness at `centre(y)` at time `t` (for GD the top Hessian eigenvalue by
        [`rodflow.top_eigenpairs`][])."""
        vals, U = args.map.sharpness(args.problem, self.centre(y), args.lr_at(t), U0, t, method=method,
                                     max_iters=max_iters)
        return vals[0], U

    def extras(self, y: PyTree, args: FlowArgs) -> dict[str, Array]:
        """Extra scalar observables recorded every step (e.g. the rod length)."""
        return {}

    # -- integration configuration ---------------------------------------------------------
    def stepsize_controller(self) -> diffrax.AbstractStepSizeController:
        if self.rtol is None:
            return diffrax.ConstantStepSize()
        return diffrax.PIDController(rtol=self.rtol, atol=self.atol if self.atol else self.rtol)

    def max_steps(self, span: int) -> int:
        if self.rtol is None:
            return math.ceil(span / self.dt) + 1
        return 64 * math.ceil(span / self.dt) + 64

    def evals_per_step(self) -> int:
        """Vector-field evaluations per solver step, from the solver's Butcher tableau
        (`diffrax.AbstractRungeKutta`: its stages, less one when the first stage is the previous
        step's last, FSAL). Solvers without a (single) tableau (`diffrax.Euler`, `ReversibleHeun`,
        `SemiImplicitEuler`, ...) are counted as one evaluation per step: exact for these, a
        lower bound for any other."""
        if isinstance(self.solver, diffrax.AbstractRungeKutta):
            tableau = self.solver.tableau
            if isinstance(tableau, diffrax.ButcherTableau):
                return int(len(tableau.c) + 1 - (1 if tableau.fsal else 0))
        return 1


def check_solver_config(flow: Any) -> None:
    if not isinstance(flow.solver, diffrax.AbstractSolver):
        raise ValueError(f"`solver` must be a diffrax solver (e.g. diffrax.Euler()), got {flow.solver!r}.")
    if not (isinstance(flow.dt, (int, float)) and flow.dt > 0):
        raise ValueError(f"`dt` must be a positive number of steps, got {flow.dt!r}.")
    for name in ("rtol", "atol"):
        value = getattr(flow, name)
        if value is not None and not (isinstance(value, (int, float)) and 0 < value < 1):
            raise ValueError(f"`{name}` must be a number in (0, 1) (or None for fixed steps), got {value!r}.")
