from __future__ import annotations

from typing import ClassVar, Literal, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._derivatives import directional_second
from .._maps import smooth_join
from ._base import FlowArgs
from ._rod_base import AbstractRodFlow, floored, unit_direction


class RodState(NamedTuple):
    """State of [`RodFlow`][]: the rod on the map's joint state `z` (without `nu` when
    `smooth_nu`), and the smooth second moments (`None` unless `smooth_nu`)."""

    centre: Float[Array, " n"]
    log_rho: Float[Array, ""]
    direction: Float[Array, " n"]
    nu: Float[Array, " m"] | None


class RodFlow(AbstractRodFlow):
    r"""Rod Flow (Regis & Chewi, arXiv:2602.01480) in polar form, with a noise floor.

    A pair of consecutive iterates `(x_t, x_{t+1})` is a rod with centre `c` and half-vector
    `r = rho v` (`|v| = 1`, `s = log rho`). For a one-step map `F(z) = z + delta(z)` (GD:
    `delta = -eta g`), one step of the rod is exactly
    `c' = (F(c+r) + F(c-r))/2`, `r' = -(F(c+r) - F(c-r))/2`; Rod Flow is the ODE whose Euler
    step of size 1 is that map. In polar form, with

    - `A = (delta(c + rho v) + delta(c - rho v)) / 2`   (mean step of the rod's ends),
    - `M = (delta(c + rho v) - delta(c - rho v)) / (2 rho)`  (rod-averaged Jacobian of delta, on v),
    - `q = v . M`,

    $$\frac{dc}{dt} = A, \qquad \frac{ds}{dt} = -2 - q, \qquad \frac{dv}{dt} = -(M - q\, v).$$

    For GD, `A = -eta (g(c+r) + g(c-r))/2`, `M = -eta D`, `q = -eta kappa`, so
    `dc/dt = -eta A_g`, `ds/dt = eta kappa - 2` (the rod grows iff its curvature `kappa`
    exceeds `2/eta`) and `dv/dt = eta (D - kappa v)` (Oja's flow: `v` aligns with the top
    Hessian eigenvector, so `kappa` is a free running sharpness estimate).

    **Small rods.** Below `rho_switch` (default `sqrt(eps) (1 + |c|)`) the finite differences
    lose accuracy and the exact limits `A = delta(c)`, `M = J_delta(c) v` (a Hessian-vector
    product for GD) are used.

    **Noise floor.** Floating-point GD never oscillates less than its rounding noise, which
    seeds the EoS instability. When `s <= log(eps_floor |c|)` and `ds/dt < 0`, `ds/dt` is set
    to 0. `eps_floor=None` uses the machine epsilon of the run's dtype; `0` disables the floor
    (and `r = 0` is then an invariant set: the flow never enters EoS).

    **Variants.** `variant="exact"` (default) uses the endpoint differences above.
    `variant="taylor"` is the rod-curvature expansion for small rods:
    `dc/dt = delta(c) + (rho^2 / 2) D^2 delta(c)[v, v]` (for GD:
    `-eta [g(c) + (rho^2/2) grad_c (v . H(c) v)]`), `M = J_delta(c) v`.

    **Optimisers with state.** The rod lives on the map's joint state `z = (params, state)`
    (§2 of the design note: the exact rod map holds for any one-step map; polar form and noise
    floor unchanged), and the map is evaluated at time `t + 1/2` (bias correction). With
    `smooth_nu=True` the second moments `nu` (`map.split(z).nu`) carry no rod component: the
    rod lives on `(params, first moment)`, both ends share the smooth `nu`, and `dnu/dt` is the
    mean of the ends' `nu` updates (`nu_at="ends"`, which keeps the oscillation's `g^2`) or the
    update at the centre (`nu_at="centre"`, one more gradient). Any map: `requires = ()`.

    **Integration.** Default: explicit Euler with `dt = 0.5` (4 gradient evaluations per GD
    step), measured as accurate as Tsit5 on `mlp-digits` (see README and
    `benchmarks/results/`). `v` is renormalised inside the vector field, so solver drift off the
    unit sphere is harmless. State: [`RodState`][] `(centre, log_rho, direction, nu)`.
    """

    name: ClassVar[str] = "rod"
    requires: ClassVar[tuple[type, ...]] = ()
    solver: diffrax.AbstractSolver = diffrax.Euler()
    dt: float = 0.5
    rtol: float | None = None
    atol: float | None = None
    variant: Literal["exact", "taylor"] = eqx.field(static=True, default="exact")
    eps_floor: float | None = None
    rho_switch: float | None = None
    smooth_nu: bool = eqx.field(static=True, default=False)
    nu_at: Literal["ends", "centre"] = eqx.field(static=True, default="ends")

    def __check_init__(self):
        if self.nu_at not in ("ends", "centre"):
            raise ValueError(f"`nu_at` must be 'ends' or 'centre', got {self.nu_at!r}.")
        if self.variant not in ("exact", "taylor"):
            raise ValueError(f"`variant` must be 'exact' or 'taylor', got {self.variant!r}.")

    # -- the rod's terms -------------------------------------------------------------------------
    def rod_terms(self, c, rho, v, args: FlowArgs, t=None, nu=None):
        """`(A, M, dnu)`: mean step of the rod's ends, rod-averaged Jacobian of delta along `v`,
        and the second moments' update (`nu` is the smooth second moment; `None`: the rod is
        on all of `z` and `dnu` is empty)."""
        if nu is None:
            def delta(x):
                return args.delta(x, t), jnp.zeros((0,), c.dtype)
        else:
            def delta(x):
                return args.map.smooth_split(args.problem, args.delta(smooth_join(x, nu), t))

        if self.variant == "taylor":
            (a, dnu), (m, _) = jax.jvp(delta, (c,), (v,))
            a = a + 0.5 * rho**2 * directional_second(lambda x: delta(x)[0], c, v)
        else:
            (a, dnu), (m, _) = self.rod_average(delta, c, rho, v)
        if nu is not None and self.nu_at == "centre":
            dnu = delta(c)[1]
        return a, m, dnu

    # -- AbstractFlow ----------------------------------------------------------------------------
    def init(self, x0, args: FlowArgs) -> RodState:
        z0 = args.init_state(x0)
        d0 = args.delta(z0, args.start)
        nu0 = None
        if self.smooth_nu:
            (z0, nu_z), (d0, nu_d) = (args.map.smooth_split(args.problem, a) for a in (z0, d0))
            nu0 = nu_z + 0.5 * nu_d
        v0, norm = unit_direction(d0)
        c0 = z0 + 0.5 * d0
        s0 = jnp.where(norm > 0, jnp.log(jnp.where(norm > 0, 0.5 * norm, 1.0)), self.log_floor(c0))
        return RodState(c0, s0, v0, nu0)

    def vector_field(self, t, y: RodState, args: FlowArgs) -> RodState:
        c, s, v, nu = y
        v = v / jnp.linalg.norm(v)
        a, m, dnu = self.rod_terms(c, jnp.exp(s), v, args, t + 0.5, nu)
        q = jnp.vdot(v, m)
        ds = -2.0 - q
        return RodState(a, floored(ds, s, self.log_floor(c)), -(m - q * v), None if nu is None else dnu)

    def _point(self, y, x):
        return x if y.nu is None else smooth_join(x, y.nu)

    def _params(self, point, args: FlowArgs):
        return args.params(point)

    def curvature(self, y: RodState, args: FlowArgs, t=None):
        """Rod curvature `kappa` in units of the map's threshold (`-q / lr` for GD, i.e. `v . D`;
        `(-q/2) * threshold(lr)` in general: the rod grows iff it exceeds the threshold)."""
        v = y.direction / jnp.linalg.norm(y.direction)
        _, m, _ = self.rod_terms(y.centre, jnp.exp(y.log_rho), v, args, None if t is None else t + 0.5, y.nu)
        return args.map.rod_sharpness(jnp.vdot(v, m), args.lr)

    def cost_per_rhs(self):
        if self.variant == "taylor":
            return {"grads": 0, "hvps": 2}  # a jvp of grad plus a second-order jvp of grad
        return {"grads": 2, "hvps": 0}  # (an HVP instead, while the rod is below rho_switch)


def rod_map(delta, c, r):
    """One exact step of the rod for the map `F(z) = z + delta(z)` (Cartesian form):
    `c' = (F(c+r) + F(c-r))/2`, `r' = -(F(c+r) - F(c-r))/2`. On a true consecutive pair
    `c = (x_k + x_{k+1})/2`, `r = (x_{k+1} - x_k)/2` it returns the next pair exactly."""
    fp, fm = c + r + delta(c + r), c - r + delta(c - r)
    return 0.5 * (fp + fm), -0.5 * (fp - fm)


def rod_vector_field_cartesian(delta, c, r):
    """Cartesian Rod Flow: the ODE whose Euler step of size 1 is [`rod_map`][]."""
    c1, r1 = rod_map(delta, c, r)
    return c1 - c, r1 - r
