from __future__ import annotations

from typing import ClassVar, Literal, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import FlowArgs
from ._momentum import AbstractSecondOrderFlow, SecondOrder, alternating_rate, nu_drive
from ._rod_base import AbstractRodFlow, floor_field, floored, unit_direction


class MomentumRodState(NamedTuple):
    """State of [`MomentumRodFlow`][]: the rod's centre and its velocity, the rod (`log rho`,
    direction) and the smooth second moment (`None` without one)."""

    centre: Float[Array, " p"]
    velocity: Float[Array, " p"]
    log_rho: Float[Array, ""]
    direction: Float[Array, " p"]
    nu: Float[Array, " n"] | None


class MomentumRodFlow(AbstractSecondOrderFlow, AbstractRodFlow):
    r"""Rod Flow for heavy ball, built on the damped second-order flow [`MomentumStableFlow`][].

    Write the iterates as `x_k = c(k) + (-1)^k r(k)` with a smooth centre `c` and a slowly
    varying rod `r`. The smooth part of `x_{k+1} - (1 + beta) x_k + beta x_{k-1} = -lr g(x_k)` is,
    to second order,

    $$\tfrac{1+\beta}{2}\ddot c + (1-\beta)\dot c = -\eta A, \qquad A = (g(c+r) + g(c-r))/2.$$

    The alternating part is linear in `r` with the rod-averaged curvature `kappa = v . D`
    (`D = (g(c + rho v) - g(c - rho v)) / (2 rho)`, `r = rho v`): per step the rod's length is
    multiplied by `|mu|`, the modulus of heavy ball's alternating root at curvature `kappa`,
    so (polar form, `s = log rho`)

    $$\dot s = \log|\mu|(\eta\kappa, \beta), \qquad \dot v = \eta (D - \kappa v),$$

    ([`alternating_rate`][]; zero at heavy ball's threshold `eta kappa = 2 + 2 beta`, positive
    above) with Oja's flow aligning `v` with the top Hessian eigenvector. A rod whose rate is
    the modulus of a discrete root, rather than the second-order expansion of the alternating
    part, keeps the exact linear growth and decay of the discrete run at every curvature; the
    expansion has `(1 + beta)/2 r'' + (1 - beta) r' + (2 + 2 beta - eta kappa) r = 0`, whose
    roots agree with it only near the threshold and which rings at 2 radians per step below it.

    **Adam and RMSProp**, as in [`MomentumStableFlow`][]: `eta` becomes `lr_k P^{-1}`, the
    curvature is the preconditioned `kappa = v . P^{-1} D` (compared with the map's threshold)
    and `nu` is driven by the mean of the two ends' `g^2`. AdamW's decoupled decay adds `wd` to
    the curvature in the rate (`log|mu|(lr_k (kappa + wd), beta_k (1 - lr wd))`) and `-lr_k wd c`
    to the centre's force; `v`'s flow is unchanged.

    **Noise floor** as for [`RodFlow`][]: `s` does not decrease below `s_min` (`log(eps |c|)`, or
    with `floor="rounding"` the log of the rounding error of `c` along `v`). Heavy ball
    starts at rest, without an oscillation: the rod starts at the floor along `-g(x_0)`. State
    [`MomentumRodState`][] `(c, u = dc/dt, s, v, nu)`, started at `c = (x_0 + x_1)/2`,
    `u = x_1 - x_0`. Small rods use the Hessian-vector product `D = H(c) v`. Default
    integrator: Tsit5 with `rtol = 1e-6` (the centre rings at up to 2 radians per step, beyond
    explicit Euler's stability). Needs a map with a second-order form
    (`requires = (AbstractMomentumMap,)`).
    """

    name: ClassVar[str] = "rod-momentum"
    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    dt: float = 0.5
    rtol: float | None = 1e-6
    atol: float | None = 1e-9
    eps_floor: float | None = None
    rho_switch: float | None = None
    floor: Literal["eps", "rounding"] = floor_field()

    def rod_terms(self, c, rho, v, args: FlowArgs):
        """`(A, D, G2)`: mean gradient of the rod's ends, the rod-averaged Hessian on `v` and the
        ends' mean squared gradient (which drives `nu`)."""
        grad = jax.grad(args.problem.loss_flat)

        def grad_and_square(x):
            g = grad(x)
            return g, g**2

        (a, g2), (dv, _) = self.rod_average(grad_and_square, c, rho, v)
        return a, dv, g2

    def init(self, x0, args: FlowArgs) -> MomentumRodState:
        c0, d, nu = self._start(x0, args)
        v0 = unit_direction(d)[0]
        return MomentumRodState(c0, d, self.log_floor(c0, v0), v0, nu)

    def vector_field(self, t, y: MomentumRodState, args: FlowArgs) -> MomentumRodState:
        c, u, s, v, nu = y
        v = v / jnp.linalg.norm(v)
        a, dv, g2 = self.rod_terms(c, jnp.exp(s), v, args)
        form = SecondOrder.of(args, t + 0.5, nu)
        pdv = form.inv_p * dv
        kappa = jnp.vdot(v, pdv)
        du = form.acceleration(a, c, u)
        a_eff = form.lr * (kappa if form.decay is None else kappa + form.decay)
        ds = floored(alternating_rate(a_eff, form.beta), s, self.log_floor(c, v))
        return MomentumRodState(u, du, ds, form.lr * (pdv - kappa * v), nu_drive(args, g2, nu))

    def _point(self, y, x):
        return x

    def _params(self, point, args: FlowArgs):
        return point

    def curvature(self, y: MomentumRodState, args: FlowArgs, t=None):
        """Rod curvature `kappa = v . P^{-1} D` (the effective sharpness along the rod), compared
        with the map's threshold (`(2 + 2 beta)/lr` for heavy ball)."""
        v = y.direction / jnp.linalg.norm(y.direction)
        k = 0.5 if t is None else t + 0.5
        pdv = SecondOrder.of(args, k, y.nu).inv_p * self.rod_terms(y.centre, jnp.exp(y.log_rho), v, args)[1]
        return jnp.vdot(v, pdv)

    def cost_per_rhs(self):
        return {"grads": 2, "hvps": 0}
