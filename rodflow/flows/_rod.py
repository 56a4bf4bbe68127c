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
from ._rod_base import AbstractRodFlow, floor_field, floored, unit_direction


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
    seeds the EoS instability. When `s <= s_min` and `ds/dt < 0`, `ds/dt` is set to 0.
    `floor="eps"` (default): `s_min = log(eps_floor |c|)`, `eps_floor=None` the machine epsilon
    of the run's dtype. `floor="rounding"`: `s_min = log sigma(c, v)`,
    `sigma = sqrt(sum_i v_i^2 ulp(c_i)^2 / 12)`, the error of rounding one iterate to nearest,
    along the rod ([`rounding_noise`][rodflow.flows._rod_base.rounding_noise]): about
    `0.2 eps |c| / sqrt(n)` for a rod spread over `n` coordinates of similar size. GD's measured
    oscillation between spikes lies between the two (on `mlp-teacher`, float32, three seeds:
    0.0095-0.023 `eps |c|`, 3.8-8.9 `sigma`; `benchmarks/noise_floor.py`). The rounding floor
    puts the float32 rod's catapults closer to GD's, and with `growth="map"` it lets the rod
    follow GD's near-annihilation down to where GD's own noise holds it (on `eos-toy` the float32
    rod then matches the float64 one); in float64 the floor rarely engages. `eps_floor=0`
    disables either (and `r = 0` is then an invariant set: the flow never enters EoS).

    **Variants.** `variant="exact"` (default) uses the endpoint differences above.
    `variant="taylor"` is the rod-curvature expansion for small rods:
    `dc/dt = delta(c) + (rho^2 / 2) D^2 delta(c)[v, v]` (for GD:
    `-eta [g(c) + (rho^2/2) grad_c (v . H(c) v)]`), `M = J_delta(c) v`.

    **Optimisers with state.** The rod lives on the map's joint state `z = (params, state)`
    (the exact rod map holds for any one-step map; polar form and noise floor unchanged), and
    the map is evaluated at time `t + 1/2` (bias correction). With `smooth_nu=True` the second
    moments `nu` (`map.split(z).nu`) carry no rod component: the
    rod lives on `(params, first moment)`, both ends share the smooth `nu`, and `dnu/dt` is the
    mean of the ends' `nu` updates (`nu_at="ends"`, which keeps the oscillation's `g^2`) or the
    update at the centre (`nu_at="centre"`, one more gradient). Any map: `requires = ()`.

    **Growth (`growth`).** One exact step of the rod map sends `r = rho v` to `-(v + M) rho`: it
    multiplies the rod's length by `|v + M|` (`|eta kappa - 1|` on a quadratic, along an
    eigenvector), and `ds/dt = -2 - q` (`growth="linear"`, the paper's, default for `order=1`) is
    its logarithm linearised at `q = -2`. Far from the threshold the two differ: at `eta kappa = 4`
    the rod grows by `log 3 = 1.10` per step, not 2; at `eta kappa = 1` one step annihilates it,
    where the linear rate gives -1. `growth="map"` uses [`map_growth`][rodflow.flows._rod.map_growth]
    `G = min(log|v + M|, -2 - q)`: the exact growth wherever the map keeps the rod's orientation
    (`1 + q < 0`), the linear rate on directions the map flips every step (the smooth half-step,
    which the centre carries; no flow can flip), continuous in between. It costs nothing more. A
    progressively sharpening run passes `eta lambda = 1` on its way to the threshold; GD's
    oscillation along the top eigenvector nearly vanishes there and the rod regrows from that
    level, so the linear rate, which does not see the dip, starts the first catapult early (on
    `eos-toy` the rod's length at the threshold is 100 times GD's; `tests/test_rod.py`).
    `growth="linear"` is guarded far above the threshold
    ([`linear_growth`][rodflow.flows._rod.linear_growth]): the paper's rate exactly up to 3 per
    step (`eta kappa <= 5` for GD), the map's growth beyond `eta kappa = 1 + e^3`, so that a
    catapult from initialisation does not blow the rod up.

    **Second order (`order=2`).** The equations above are the first-order truncation of the rod
    map: the growth is linearised, and the time-1 map of any flow `dy/dt = f(y)` is
    `y + f + (1/2) f'f + O(f^3)`, whose middle term one map step does not have. With
    `g = (A, G, dnu)` the one-step increments of the centre, of `s` (the map growth `G` above) and
    of `nu`, the flow

    $$\frac{d(c, s, \nu)}{dt} = g - \tfrac12\, g'f = 2\, g(y) - g\big(y + \tfrac12 f(y)\big) + O(g^3),
    \qquad \frac{dv}{dt} = -(M - q\, v),$$

    (backward error analysis: the same correction turns gradient flow into the modified equation
    `-eta (g + (eta/2) H g)` that GD follows to second order) agrees with the rod map to second
    order in the centre and the rod length; the finite difference on the right evaluates the rod's
    terms at `y` and half a step on (twice the gradients of `order=1` per evaluation).
    `tests/test_rod_order.py` measures the time-1 error against one map step on a quadratic and
    a quartic as the increments shrink: slope 2 for `order=1`, 3 (or more) for `order=2`.
    The direction keeps Oja's equation in both orders: along directions of low curvature one map
    step flips the rod's component (`(1 - eta lambda)/(1 - eta kappa)` is near -1), so the map is
    not near the identity there, and the flow models the two-step mean (which decays).
    The correction assumes the flow is integrated accurately: the default solver for `order=2`
    is Tsit5 with `rtol 1e-6` (a fixed-step Euler at `dt 0.5` adds `(1/4) f'f` of its own, and
    Heun at `dt 1` is not stable on a network's directions of curvature near `2/eta`: there
    one map step multiplies the centre's component by `1 - eta lambda`, near -1, the map is not
    near the identity, and the corrected rate `-x - x^2/2` (`x = eta lambda`) is about -4 per
    step, twice the first-order damping). The order statement, like the direction's, holds
    where the map is near the identity; the tests check it there (centre orthogonal to the
    critical directions). Measured side by side (docs, benchmarks: "Rod order, growth and
    catapult timing"): on `eos-toy` the paper's rod puts GD's loss spikes 21-24 steps early,
    `growth="map"` within 3 steps and `order=2` within 1; on `mlp-digits` (float64, flows started
    after the catapult from initialisation) `d` 0.0056, 0.0045 and 0.0021 and loss error 0.046,
    0.040 and 0.030 (gradient flow 0.035); from step 0 none of them helps. `order=2` costs about 9
    times the gradient evaluations, and on the symmetric `quartic` its adaptive solve stops at the
    step cap. The defaults stay the paper's (`order=1`, `growth="linear"`).

    **Integration.** Default: explicit Euler with `dt = 0.5` (4 gradient evaluations per GD
    step), measured as accurate as Tsit5 on `mlp-digits` (docs, benchmarks: "Flagship run";
    `benchmarks/results/`). `v` is renormalised inside the vector field, so solver drift off the
    unit sphere is harmless; `order=2`: Tsit5, `rtol 1e-6`, `atol 1e-9`.
    State: [`RodState`][] `(centre, log_rho, direction, nu)`.
    """

    name: ClassVar[str] = "rod"
    requires: ClassVar[tuple[type, ...]] = ()
    solver: diffrax.AbstractSolver | None = eqx.field(
        default=None, metadata={"help": "default by order: euler (order 1), tsit5 with rtol 1e-6 (order 2)"})
    dt: float | None = eqx.field(default=None, metadata={"help": "default 0.5"})
    rtol: float | None = None
    atol: float | None = None
    variant: Literal["exact", "taylor"] = eqx.field(static=True, default="exact")
    eps_floor: float | None = None
    rho_switch: float | None = None
    smooth_nu: bool = eqx.field(static=True, default=False)
    nu_at: Literal["ends", "centre"] = eqx.field(static=True, default="ends")
    order: Literal[1, 2] = eqx.field(static=True, default=1)
    floor: Literal["eps", "rounding"] = floor_field()
    growth: Literal["linear", "map"] | None = eqx.field(
        static=True, default=None,
        metadata={"help": "rod growth: 'linear' (-2 - q, the paper's, guarded above 3 per step; default "
                          "for order 1) or 'map' (min(log|v + M|, -2 - q); order 2 uses it)"})

    def __post_init__(self):
        # the solver by order when none is given: Euler dt 0.5 (the paper's flow); Tsit5 at
        # rtol 1e-6 for the second-order flow, whose correction needs an accurate integration
        if self.solver is None:
            if self.order == 1:
                self.solver = diffrax.Euler()
            else:
                self.solver = diffrax.Tsit5()
                self.rtol = 1e-6 if self.rtol is None else self.rtol
                self.atol = 1e-9 if self.atol is None else self.atol
        if self.dt is None:
            self.dt = 0.5
        if self.growth is None and self.order == 2:  # None at order 1 is the paper's 'linear' (and
            self.growth = "map"  # keeps the default rod's repr, which checkpoints record, unchanged)

    def __check_init__(self):
        if self.order not in (1, 2):
            raise ValueError(f"`order` must be 1 (the paper's Rod Flow) or 2, got {self.order!r}.")
        if self.growth not in (None, "linear", "map"):
            raise ValueError(f"`growth` must be 'linear' or 'map', got {self.growth!r}.")
        if self.order == 2 and self.growth != "map":
            raise ValueError("`order=2` corrects the rod map's own growth: it needs growth='map' (the "
                             "default for order 2), not 'linear'.")
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
        s0 = jnp.where(norm > 0, jnp.log(jnp.where(norm > 0, 0.5 * norm, 1.0)), self.log_floor(c0, v0))
        return RodState(c0, s0, v0, nu0)

    def terms(self, t, y: RodState, args: FlowArgs):
        """`(v, A, q, m_perp, dnu)` at step `t`: the unit direction, the mean step of the rod's
        ends, `q = v . M` and the part of `M` orthogonal to `v`, and the second moments' update."""
        c, s, v, nu = y
        v = v / jnp.linalg.norm(v)
        a, m, dnu = self.rod_terms(c, jnp.exp(s), v, args, t + 0.5, nu)
        q = jnp.vdot(v, m)
        return v, a, q, m - q * v, dnu

    def vector_field(self, t, y: RodState, args: FlowArgs) -> RodState:
        c, s, _, nu = y
        v, a, q, m_perp, dnu = self.terms(t, y, args)
        grow = map_growth(q, m_perp) if self.growth == "map" else linear_growth(q, m_perp)
        if self.order == 1:
            return RodState(a, floored(grow, s, self.log_floor(c, v)), -m_perp, None if nu is None else dnu)
        # order 2: f = g - (1/2) g'f on (c, s, nu), with g'f = 2 (g(y + f/2) - g(y)) + O(g^3)
        half = RodState(c + 0.5 * a, s + 0.5 * grow, v - 0.5 * m_perp, None if nu is None else nu + 0.5 * dnu)
        _, a_h, q_h, m_perp_h, dnu_h = self.terms(t + 0.5, half, args)
        ds = 2.0 * grow - map_growth(q_h, m_perp_h)
        return RodState(2.0 * a - a_h, floored(ds, s, self.log_floor(c, v)), -m_perp,
                        None if nu is None else 2.0 * dnu - dnu_h)

    def _point(self, y, x):
        return x if y.nu is None else smooth_join(x, y.nu)

    def _params(self, point, args: FlowArgs):
        return args.params(point)

    def curvature(self, y: RodState, args: FlowArgs, t=None):
        """Rod curvature `kappa` in units of the map's threshold (`-q / lr` for GD, i.e. `v . D`;
        `(-q/2) * threshold(lr)` in general: the rod grows iff it exceeds the threshold)."""
        v = y.direction / jnp.linalg.norm(y.direction)
        t_half = None if t is None else t + 0.5
        _, m, _ = self.rod_terms(y.centre, jnp.exp(y.log_rho), v, args, t_half, y.nu)
        return args.map.rod_sharpness(jnp.vdot(v, m), args.lr_at(t_half))

    def cost_per_rhs(self):
        # order 2 evaluates the rod's terms twice (at y and at the rod map's image of y)
        if self.variant == "taylor":
            return {"grads": 0, "hvps": 2 * self.order}  # a jvp of grad plus a second-order jvp
        return {"grads": 2 * self.order, "hvps": 0}  # (an HVP instead, while the rod is below rho_switch)


def map_growth(q, m_perp):
    """The rod map's growth of `log rho` per step, as a flow can follow it:
    `min(log|v + M|, -2 - q)`.

    One step of the rod map sends `r = rho v` to `-(v + M) rho` (to first order in `rho`), so it
    multiplies the length by `|v + M|` (`|v + M|^2 = (1 + q)^2 + |m_perp|^2`; on a quadratic along
    an eigenvector, `|1 - eta lambda|`). Where `1 + q < 0` (`eta kappa > 1` for GD) the rod keeps
    its orientation and `log|v + M|` is its exact growth; at `1 + q = 0` one step annihilates it.
    Where `1 + q > 0` the map flips the rod every step: that part is the smooth half-step, not an
    oscillation, and the centre carries it; no flow can flip, and the paper's rate `-2 - q` (whose
    Euler step of size 1 is the flip) discards it. `log x <= x - 1` makes the minimum the exact
    growth wherever the rod keeps its orientation (and near the annihilation on the other side,
    from `eta kappa` about 0.72) and `-2 - q` for smooth directions; it is continuous."""
    return jnp.minimum(_log_growth(q, m_perp), -2.0 - q)


GROWTH_GUARD = 3.0  # linear_growth: the paper's rate is kept exactly up to this many e-folds per step


def linear_growth(q, m_perp):
    """The paper's growth of `log rho` per step, `-2 - q` (`eta kappa - 2` for GD), guarded far
    above the threshold: `min(-2 - q, max(GROWTH_GUARD, log|v + M|))`, `GROWTH_GUARD = 3`.

    `-2 - q` linearises the rod map's growth `log|v + M|` (`log|eta kappa - 1|` for GD) at the
    threshold and overstates it above: at `eta kappa = 8` (four times the threshold, a catapult
    from initialisation) the rod would grow by `e^6 = 403` per step where GD's oscillation grows
    by 7, and leave the region GD stays in within two steps (on `eos-toy` started at sharpness
    20, lr 0.4, the rod became non-finite at step 2 (float32; 3 in float64) while GD settled;
    `tests/test_rod.py`). The guard keeps the paper's rate, bit for bit, up to 3 per step
    (`eta kappa <= 5` for GD, 2.5 times the threshold), holds it at 3 while the map's own
    growth is below 3 (up to `eta kappa = 1 + e^3 = 21`) and follows the map's growth above:
    continuous and never above the paper's rate. It is a safety net for catapults from
    initialisation, not a change of the model: its level lies above the largest rate that the
    committed gradient-descent runs on the CPU reach (2.49, `cnn-digits`;
    `benchmarks/growth_guard.py`), which it leaves bit for bit (the GPU's `cnn-digits` float64
    row predates it: its CPU twin reaches 3.48). The rods on the joint state of heavy ball and
    of Adam with `beta1 = 0.5` on `mlp-digits` reach 4-11.5, warm-started too; those results
    were regenerated with it."""
    return jnp.minimum(-2.0 - q, jnp.maximum(GROWTH_GUARD, _log_growth(q, m_perp)))


def _log_growth(q, m_perp):
    """`log|v + M|` (`|v + M|^2 = (1 + q)^2 + |m_perp|^2`)."""
    tiny = jnp.finfo(m_perp.dtype).tiny
    return 0.5 * jnp.log(jnp.maximum((1.0 + q) ** 2 + jnp.vdot(m_perp, m_perp), tiny))


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
