"""Second-order (momentum) flows for heavy ball: the damped second-order flow and its Rod Flow."""

from __future__ import annotations

import math
from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr

from .._lax import gated
from .._maps import GradientDescent, HeavyBall
from ._base import AbstractFlow, FlowArgs, check_solver_config


def _beta(args: FlowArgs) -> float:
    """Heavy ball's momentum (0 for GD); other maps have no such second-order model."""
    m = args.map
    if isinstance(m, GradientDescent):
        return 0.0
    if isinstance(m, HeavyBall) and not m.nesterov:
        return m.beta
    raise ValueError(
        f"the momentum flows model heavy ball (`optimizer='heavy-ball'`) or GD, got {type(m).__name__}; "
        "use `StableFlow` / `RodFlow` (the flows on the joint state) for other optimisers."
    )


def _start(args: FlowArgs, x0):
    """`x1 - x0` of the discrete run (heavy ball starts at rest: `x1 = x0 - lr g(x0)`)."""
    return -args.lr * jax.grad(args.problem.loss_flat)(x0)


def _z(args: FlowArgs, c, u):
    """The joint state `(x, m)` of optax's heavy ball at centre `c` with velocity `u`
    (`x_{k+1} - x_k = -lr m_{k+1}`, so `m = -u / lr`); GD's state is `x` alone."""
    if isinstance(args.map, GradientDescent):
        return c
    return jnp.concatenate([c, -u / args.lr])


class MomentumStableFlow(AbstractFlow):
    r"""Heavy ball's damped second-order flow (its ODE without oscillation).

    Heavy ball `x_{k+1} - x_k = beta (x_k - x_{k-1}) - lr g(x_k)`, Taylor-expanded about a smooth
    path `x(k)` to second order (`x(k+-1) = x +- x' + x''/2`), reads

    $$\frac{1 + \beta}{2}\,\ddot x + (1 - \beta)\,\dot x = -\eta\, g(x).$$

    Unlike the first-order flow on the joint state (`dz/dt = F(z) - z`, [`StableFlow`][]), it
    has the discrete run's damping (per step `sqrt(beta)` for every underdamped direction:
    rate `(1 - beta)/(1 + beta)`, against `-log sqrt(beta)`, equal to first order in `1 - beta`)
    and its ringing frequency. The state is `(x, u = dx/dt)`, started at the first centre
    `(x_0 + x_1)/2` with `u = x_1 - x_0`. Default integrator: Tsit5, `rtol = 1e-6`.
    """

    name: ClassVar[str] = "stable-momentum"
    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    dt: float = 0.5
    rtol: float | None = 1e-6
    atol: float | None = 1e-9

    def __check_init__(self):
        check_solver_config(self)

    def init(self, x0, args: FlowArgs):
        _beta(args)
        d = _start(args, x0)
        return (x0 + 0.5 * d, d)

    def vector_field(self, t, y, args: FlowArgs):
        beta = _beta(args)
        c, u = y
        g = jax.grad(args.problem.loss_flat)(c)
        return (u, (2.0 / (1.0 + beta)) * (-args.lr * g - (1.0 - beta) * u))

    def centre(self, y):
        return y[0]

    def sharpness(self, y, args: FlowArgs, U0, t=None, *, method="auto", max_iters=40):
        vals, U = args.map.sharpness(args.problem, _z(args, *y), args.lr, U0, t, method=method,
                                     max_iters=max_iters)
        return vals[0], U

    def predicted_loss(self, y, args: FlowArgs):
        return args.problem.loss_flat(y[0])

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
    rate = jnp.where(real_neg, jnp.log(jnp.where(real_neg, -mu, 1.0)), 0.5 * math.log(max(beta, 1e-300)))
    # Below the threshold the rod only decays to the noise floor; bounding the decay rate (by
    # GD's `a - 2 >= -2`) keeps the right-hand side free of needless stiffness.
    return jnp.maximum(rate, -2.0)


class MomentumRodFlow(AbstractFlow):
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

    **Noise floor** as for [`RodFlow`][]: `s` does not decrease below `log(eps |c|)`. Heavy ball
    starts at rest, without an oscillation: the rod starts at the floor along `-g(x_0)`. State
    `(c, u = dc/dt, s, v)`, started at `c = (x_0 + x_1)/2`, `u = x_1 - x_0`. Small rods use the
    Hessian-vector product `D = H(c) v`. Default integrator: Tsit5 with `rtol = 1e-6` (the
    centre rings at up to 2 radians per step, beyond explicit Euler's stability).
    """

    name: ClassVar[str] = "rod-momentum"
    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    dt: float = 0.5
    rtol: float | None = 1e-6
    atol: float | None = 1e-9
    eps_floor: float | None = None
    rho_switch: float | None = None

    def __check_init__(self):
        check_solver_config(self)
        if self.eps_floor is not None and not self.eps_floor >= 0:
            raise ValueError(f"`eps_floor` must be >= 0 (0 disables the floor), got {self.eps_floor}.")

    def log_floor(self, c):
        eps = jnp.finfo(c.dtype).eps if self.eps_floor is None else self.eps_floor
        return jnp.log(eps * jnp.linalg.norm(c))

    def _rho_switch(self, c):
        if self.rho_switch is not None:
            return self.rho_switch
        return jnp.sqrt(jnp.finfo(c.dtype).eps) * (1.0 + jnp.linalg.norm(c))

    def rod_terms(self, c, rho, v, args: FlowArgs):
        """`(A, D)`: mean gradient of the rod's ends and the rod-averaged Hessian on `v`."""
        grad = jax.grad(args.problem.loss_flat)

        def finite():
            gp, gm = grad(c + rho * v), grad(c - rho * v)
            return 0.5 * (gp + gm), (gp - gm) / (2.0 * rho)

        def small():
            return jax.jvp(grad, (c,), (v,))

        big = rho > self._rho_switch(c)
        zeros = (jnp.zeros_like(c), jnp.zeros_like(c))
        fd = gated(big, finite, zeros)
        hv = gated(~big, small, zeros)
        return tuple(jnp.where(big, p, q) for p, q in zip(fd, hv))

    def init(self, x0, args: FlowArgs):
        _beta(args)
        d = _start(args, x0)
        norm = jnp.linalg.norm(d)
        c0 = x0 + 0.5 * d
        fallback = jr.normal(jr.PRNGKey(0), x0.shape, x0.dtype)
        v0 = jnp.where(norm > 0, d / jnp.where(norm > 0, norm, 1.0), fallback / jnp.linalg.norm(fallback))
        return (c0, d, self.log_floor(c0), v0)

    def vector_field(self, t, y, args: FlowArgs):
        beta = _beta(args)
        c, u, s, v = y
        v = v / jnp.linalg.norm(v)
        a, dv = self.rod_terms(c, jnp.exp(s), v, args)
        kappa = jnp.vdot(v, dv)
        du = (2.0 / (1.0 + beta)) * (-args.lr * a - (1.0 - beta) * u)
        ds = alternating_rate(args.lr * kappa, beta)
        ds = jnp.where((s <= self.log_floor(c)) & (ds < 0), jnp.zeros_like(ds), ds)
        return (u, du, ds, args.lr * (dv - kappa * v))

    def centre(self, y):
        return y[0]

    def ends(self, y):
        c, _, s, v = y
        r = jnp.exp(s) * v / jnp.linalg.norm(v)
        return c + r, c - r

    def predicted_loss(self, y, args: FlowArgs):
        plus, minus = self.ends(y)
        return 0.5 * (args.problem.loss_flat(plus) + args.problem.loss_flat(minus))

    def curvature(self, y, args: FlowArgs):
        """Rod curvature `kappa = v . D`, compared with heavy ball's threshold `(2 + 2 beta)/lr`."""
        c, _, s, v = y
        v = v / jnp.linalg.norm(v)
        return jnp.vdot(v, self.rod_terms(c, jnp.exp(s), v, args)[1])

    def sharpness(self, y, args: FlowArgs, U0, t=None, **kwargs):
        return self.curvature(y, args), U0

    def extras(self, y, args: FlowArgs):
        return {"rho": jnp.exp(y[2])}

    def cost_per_rhs(self):
        return {"grads": 2, "hvps": 0}
