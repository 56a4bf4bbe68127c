"""What every rod shares: its ends, the gating between finite differences and the exact small-rod
limit, the noise floor, the predicted loss, the curvature as sharpness and the extras.

The concrete rods are [`RodFlow`][] (first order, on the map's joint state `z`) and
[`MomentumRodFlow`][] (second order, on the parameters, for maps with a heavy-ball form).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from .._lax import branch
from ._base import AbstractFlow, FlowArgs


def check_floor(eps_floor, floor) -> None:
    if eps_floor is not None and not eps_floor >= 0:
        raise ValueError(f"`eps_floor` must be >= 0 (0 disables the floor), got {eps_floor}.")
    if floor not in ("eps", "rounding"):
        raise ValueError(f"`floor` must be 'eps' or 'rounding', got {floor!r}.")
    if floor == "rounding" and eps_floor not in (None, 0):
        raise ValueError(f"`eps_floor` ({eps_floor}) only sets the 'eps' floor; with floor='rounding' "
                         "leave it None (or 0 to disable the floor).")


def floor_field():
    """The `floor` field of a concrete rod (one declaration of its type, default and help)."""
    return eqx.field(static=True, default="eps",
                     metadata={"help": "noise floor: 'eps' (eps_floor |c|) or 'rounding' (GD's "
                                       "rounding error along the rod)"})


def rounding_noise(c, v):
    """The standard deviation, along the unit vector `v`, of the error of rounding `c` to its
    dtype: `sqrt(sum_i v_i^2 ulp(c_i)^2 / 12)` (round to nearest: an error uniform on
    `+-ulp(c_i)/2` in each coordinate, `ulp` the spacing of floats at `|c_i|`)."""
    ulp = jax.lax.stop_gradient(jnp.spacing(jnp.abs(c)))
    return jnp.sqrt(jnp.vdot(v * v, ulp * ulp) / 12.0)


def log_floor(c, v, eps_floor=None, floor="eps"):
    """The noise floor of a rod centred at `c` along `v`, as `s_min = log rho_min`.

    `floor="eps"`: `rho_min = eps_floor |c|`, with `eps_floor=None` the machine epsilon of `c`'s
    dtype. `floor="rounding"`: `rho_min` is
    [`rounding_noise`][rodflow.flows._rod_base.rounding_noise]`(c, v)`, the rounding error of one
    stored iterate along the rod. `eps_floor = 0` disables either (`-inf`)."""
    if floor == "rounding":
        if eps_floor is not None:  # 0, the only other value check_floor lets through
            return jnp.asarray(-jnp.inf, c.dtype)
        tiny = jnp.finfo(c.dtype).tiny
        return jnp.log(jnp.maximum(rounding_noise(c, v / jnp.linalg.norm(v)), tiny))
    eps = jnp.finfo(c.dtype).eps if eps_floor is None else eps_floor
    return jnp.log(eps * jnp.linalg.norm(c))


def floored(ds, s, s_min):
    """`ds/dt` with the noise floor: a rod at or below `s_min` does not shrink further."""
    return jnp.where((s <= s_min) & (ds < 0), jnp.zeros_like(ds), ds)


def rho_switch_at(c, rho_switch=None):
    """Rod length below which finite differences give way to the Hessian-vector product
    (default `sqrt(eps) (1 + |c|)`)."""
    if rho_switch is not None:
        return rho_switch
    return jnp.sqrt(jnp.finfo(c.dtype).eps) * (1.0 + jnp.linalg.norm(c))


def unit_direction(d):
    """`(d / |d|, |d|)`; a fixed random unit vector when `d = 0`."""
    norm = jnp.linalg.norm(d)
    fallback = jr.normal(jr.PRNGKey(0), d.shape, d.dtype)
    v = jnp.where(norm > 0, d / jnp.where(norm > 0, norm, 1.0), fallback / jnp.linalg.norm(fallback))
    return v, norm


class AbstractRodFlow(AbstractFlow):
    """A rod: centre `c`, half-vector `r = rho v` (`|v| = 1`, `s = log rho`), ends `c +- r`.

    **Rod averages.** For a function `f` of the point (the map's step `delta` for
    [`RodFlow`][], the gradient for [`MomentumRodFlow`][]) the rod needs the mean over its ends
    and the rod-averaged derivative along `v`,

        (f(c + rho v) + f(c - rho v)) / 2,    (f(c + rho v) - f(c - rho v)) / (2 rho).

    Below `rho_switch` (default `sqrt(eps) (1 + |c|)`) the finite differences lose accuracy and
    their exact limits `f(c)` and `J_f(c) v` (a Jacobian- or Hessian-vector product) are used
    ([`rod_average`][]; a single run evaluates only the branch it takes, a sweep both only while
    its lanes disagree).

    **Noise floor.** Floating-point GD never oscillates less than its rounding noise, which
    seeds the EoS instability. When `s <= s_min` and `ds/dt < 0`, `ds/dt` is set to 0, with
    `s_min = log(eps_floor |c|)` (`floor="eps"`, the default; `eps_floor=None` uses the machine
    epsilon of the run's dtype) or `s_min = log(sigma)`, `sigma = sqrt(sum_i v_i^2 ulp(c_i)^2 / 12)`
    the rounding error of one stored iterate along the rod (`floor="rounding"`,
    [`rounding_noise`][rodflow.flows._rod_base.rounding_noise]). `eps_floor=0` disables the floor.

    **Observables.** The predicted loss is the mean of the loss at the two ends (GD's loss
    averaged over an oscillation); the sharpness is the rod's curvature ([`curvature`][], no
    eigensolver); the extras record the rod length `rho`.

    State: a NamedTuple with (at least) the fields `centre`, `log_rho` and `direction`.
    """

    eps_floor: eqx.AbstractVar[float | None]
    rho_switch: eqx.AbstractVar[float | None]
    floor: eqx.AbstractVar[str]

    def __check_init__(self):
        check_floor(self.eps_floor, self.floor)

    def log_floor(self, c, v):
        """`s_min`, the log of the noise floor of a rod centred at `c` along `v` (`log_floor`;
        `-inf` when the floor is disabled)."""
        return log_floor(c, v, self.eps_floor, self.floor)

    def rod_average(self, fn, c, rho, v):
        """`(mean of fn over the ends, rod-averaged derivative of fn along v)` (pytrees like
        `fn`'s output), by finite differences above `rho_switch`, by `jax.jvp` below."""

        def finite():
            fp, fm = fn(c + rho * v), fn(c - rho * v)
            return (jax.tree.map(lambda p, m: 0.5 * (p + m), fp, fm),
                    jax.tree.map(lambda p, m: (p - m) / (2.0 * rho), fp, fm))

        return branch(rho > rho_switch_at(c, self.rho_switch), finite, lambda: jax.jvp(fn, (c,), (v,)))

    @abc.abstractmethod
    def _point(self, y, x):
        """The point of the map's state space (or the parameters) at `x`, the rod part of `y`."""

    @abc.abstractmethod
    def _params(self, point, args: FlowArgs):
        """The parameters at a point returned by [`_point`][]."""

    @abc.abstractmethod
    def curvature(self, y, args: FlowArgs, t=None):
        """The rod's curvature, compared with the map's threshold."""

    def centre(self, y):
        return self._point(y, y.centre)

    def ends(self, y):
        """The rod's two ends `c +- r`."""
        r = jnp.exp(y.log_rho) * y.direction / jnp.linalg.norm(y.direction)
        return self._point(y, y.centre + r), self._point(y, y.centre - r)

    def predicted_loss(self, y, args: FlowArgs):
        plus, minus = self.ends(y)
        loss = args.problem.loss_flat
        return 0.5 * (loss(self._params(plus, args)) + loss(self._params(minus, args)))

    measures_eigenvalues: ClassVar[bool] = False

    def sharpness(self, y, args: FlowArgs, U0, t=None, **kwargs):
        return self.curvature(y, args, t), U0

    def extras(self, y, args: FlowArgs):
        return {"rho": jnp.exp(y.log_rho)}
