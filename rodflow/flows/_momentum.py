"""Second-order (momentum) flows: the damped second-order flow of heavy ball / Adam; its Rod Flow is
[`MomentumRodFlow`][]. Both read the map's second-order form ([`AbstractMomentumMap`][])."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._maps import AbstractMomentumMap, AbstractPreconditionedMap, preconditioned_eigenpairs
from .._spectrum import top_eigenpairs
from ._base import AbstractFlow, FlowArgs


class SecondOrder(NamedTuple):
    """The map's second-order form at (fractional) step `k`,
    `x_{k+1} - x_k = beta (x_k - x_{k-1}) - lr (inv_p g(x_k) + decay x_k)`: `inv_p = 1/P`
    (`P = sqrt(nu_hat) + eps` of the smooth `nu`; 1 without a second moment), `decay` the
    decoupled weight decay (`None`: none)."""

    beta: Any
    lr: Any
    inv_p: Any
    decay: float | None

    @staticmethod
    def of(args: FlowArgs, k, nu) -> SecondOrder:
        m = args.map
        beta, lr_k = m.coefficients(args.lr_at(k), k)
        inv_p = 1.0 if nu is None else 1.0 / m.preconditioner(nu, k + 1.0)
        return SecondOrder(beta, lr_k, inv_p, m.decoupled_decay())

    def acceleration(self, grad, x, u):
        """`du/dt` of `(1 + beta)/2 x'' + (1 - beta) x' = -lr (P^{-1} grad + decay x)`."""
        force = -self.lr * self.inv_p * grad
        if self.decay is not None:
            force = force - self.lr * self.decay * x
        return (2.0 / (1.0 + self.beta)) * (force - (1.0 - self.beta) * u)


def nu_drive(args: FlowArgs, g2, nu):
    """`dnu/dt` of the smooth second moment (`None` without one)."""
    return None if nu is None else args.map.nu_drive(g2, nu)


def start_centre(args: FlowArgs, x0):
    """`(c_0, x_1 - x_0, nu)` at the flows' start: one step of the optimiser itself from rest
    (from the warm start's state `z_K` at step `K`: `x_{K+1} - x_K` and `nu_{K+1}`), and the
    first centre `c_0 = (x_0 + x_1)/2`. Time `t` is the centre between steps `t` and `t + 1`,
    whose update uses the second moment at count `t + 1.5`; the discrete run's `nu_1` (count
    1) is advanced by half a step of `nu`'s own ODE, `dnu/dt = (1 - beta2)(g(c_0)^2 - nu)`, to
    count 1.5. Without it `nu` lags the bias correction by half a step: `P^{-1}` starts
    `sqrt(1.5)` too large for Adam. `nu` is `None` for maps without a second moment."""
    z0 = args.init_state(x0)
    z1 = z0 + args.delta(z0, args.start)
    d = args.params(z1) - args.params(z0)
    c0 = args.params(z0) + 0.5 * d
    nu = None
    if isinstance(args.map, AbstractPreconditionedMap):
        nu = args.map.split(args.problem, z1).nu
        nu = nu + 0.5 * args.map.nu_drive(jax.grad(args.problem.loss_flat)(c0) ** 2, nu)
    return c0, d, nu


def effective_sharpness(args: FlowArgs, x, nu, k, U0, method, max_iters):
    """Effective sharpness `lambda_max(P^{-1} H)` at `x` (the map's threshold applies)."""
    if nu is None:
        vals, U = top_eigenpairs(args.problem.loss_flat, x, U0, method=method, max_iters=max_iters)
    else:
        scale = jnp.sqrt(SecondOrder.of(args, k, nu).inv_p) * jnp.ones_like(x)
        vals, U = preconditioned_eigenpairs(args.problem.loss_flat, x, scale, U0, method=method,
                                            max_iters=max_iters)
    return vals[0], U


class AbstractSecondOrderFlow(AbstractFlow):
    """A flow on the map's second-order (heavy-ball) form ([`SecondOrder`][]): it needs a map
    that publishes one (`requires = (AbstractMomentumMap,)`) and starts from the discrete
    run's first step ([`start_centre`][])."""

    requires: ClassVar[tuple[type, ...]] = (AbstractMomentumMap,)

    def _start(self, x0, args: FlowArgs):
        """`(c_0, x_1 - x_0, nu)`, after checking that the map is supported."""
        self.check_supported(args.map)
        return start_centre(args, x0)


class MomentumState(NamedTuple):
    """State of [`MomentumStableFlow`][]: position, velocity `dx/dt`, smooth second moment."""

    centre: Float[Array, " p"]
    velocity: Float[Array, " p"]
    nu: Float[Array, " n"] | None


class MomentumStableFlow(AbstractSecondOrderFlow):
    r"""The damped second-order flow of heavy ball (and of RMSProp / Adam, see below): the
    optimiser's ODE without oscillation.

    Heavy ball `x_{k+1} - x_k = beta (x_k - x_{k-1}) - lr g(x_k)`, Taylor-expanded about a smooth
    path `x(k)` to second order (`x(k+-1) = x +- x' + x''/2`), reads

    $$\frac{1 + \beta}{2}\,\ddot x + (1 - \beta)\,\dot x = -\eta\, g(x).$$

    Unlike the first-order flow on the joint state (`dz/dt = F(z) - z`, [`StableFlow`][]), it
    has the discrete run's damping (per step `sqrt(beta)` for every underdamped direction:
    rate `(1 - beta)/(1 + beta)`, against `-log sqrt(beta)`, equal to first order in `1 - beta`)
    and its ringing frequency.

    **Adam and RMSProp** are heavy ball with a preconditioner: with `P = sqrt(nu_hat) + eps`
    varying slowly, Adam's `x_{k+1} - x_k = beta_k (x_k - x_{k-1}) - lr_k P^{-1} g(x_k)` with
    `beta_k -> beta1`, `lr_k -> lr (1 - beta1)` (bias correction: `beta_k = beta1 B(k-1)/B(k)`,
    `lr_k = lr (1 - beta1)/B(k)`, `B(k) = 1 - beta1^(k+1)`); RMSProp is `beta1 = 0`. AdamW adds
    its decoupled decay: momentum `beta_k (1 - lr wd)` and `-lr_k wd x` on the right-hand side.
    The map publishes this form ([`AbstractMomentumMap.coefficients`][], evaluated at the
    centre's fractional step `k = t + 1/2`). The second moment is a smooth variable,
    `dnu/dt = (1 - beta2)(g^2 - nu)` (scalar variants: the mean of `g^2`). The state is
    [`MomentumState`][] `(x, u = dx/dt, nu)`, started at the first centre `(x_0 + x_1)/2` with
    `u = x_1 - x_0` and the discrete run's `nu_1` moved on half a step to the centre's count
    ([`start_centre`][]). Default integrator: Tsit5, `rtol = 1e-6`. Nesterov and NAdam are not
    covered (`requires = (AbstractMomentumMap,)`).
    """

    name: ClassVar[str] = "stable-momentum"
    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    dt: float = 0.5
    rtol: float | None = 1e-6
    atol: float | None = 1e-9

    def init(self, x0, args: FlowArgs) -> MomentumState:
        return MomentumState(*self._start(x0, args))

    def vector_field(self, t, y: MomentumState, args: FlowArgs) -> MomentumState:
        c, u, nu = y
        g = jax.grad(args.problem.loss_flat)(c)
        du = SecondOrder.of(args, t + 0.5, nu).acceleration(g, c, u)
        return MomentumState(u, du, nu_drive(args, g**2, nu))

    def centre(self, y):
        return y.centre

    def sharpness(self, y, args: FlowArgs, U0, t=None, *, method="auto", max_iters=40):
        k = 0.5 if t is None else t + 0.5
        return effective_sharpness(args, y.centre, y.nu, k, U0, method, max_iters)

    def predicted_loss(self, y, args: FlowArgs):
        return args.problem.loss_flat(y.centre)

    def cost_per_rhs(self):
        return {"grads": 1, "hvps": 0}


def alternating_rate(a, beta):
    """Growth rate per step of heavy ball's alternating mode on a quadratic of curvature
    `a / lr`: `log |mu|` for the most negative root `mu` of `mu^2 - (1 + beta - a) mu + beta = 0`
    when the roots are real and negative, `log sqrt(beta)` when they are complex (an underdamped
    direction, which decays at that rate without alternating), bounded below by -2. Zero exactly
    at the threshold `a = 2 + 2 beta`; for `beta = 0` it is `log |1 - a|` (GD's `a - 2` to first
    order)."""
    a = jnp.asarray(a)
    b = 1.0 + beta - a
    disc = b * b - 4.0 * beta
    real_neg = (disc >= 0) & (b < 0)
    mu = 0.5 * (b - jnp.sqrt(jnp.where(real_neg, disc, 0.0)))
    underdamped = 0.5 * jnp.log(jnp.maximum(beta, 1e-30))
    rate = jnp.where(real_neg, jnp.log(jnp.where(real_neg, -mu, 1.0)), underdamped)
    # Below the threshold the rod only decays to the noise floor; bounding the decay rate (by
    # GD's `a - 2 >= -2`) keeps the right-hand side free of needless stiffness.
    return jnp.maximum(rate, -2.0)
