"""Second-order (momentum) flows: the damped second-order flow of heavy ball / Adam and its Rod Flow."""

from __future__ import annotations

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from .._lax import gated
from .._maps import AbstractMap, Adam, GradientDescent, HeavyBall, RMSProp, preconditioned_eigenpairs
from .._spectrum import top_eigenpairs
from ._base import AbstractFlow, FlowArgs, check_solver_config
from ._rod import check_eps_floor, floored, log_floor, rho_switch_at, unit_direction


class _Family(eqx.Module):
    """Heavy ball with a slowly varying diagonal preconditioner: the form shared by GD, heavy
    ball, RMSProp and Adam (and their scalar variants). At step `k`,

        x_{k+1} - x_k = beta_k (x_k - x_{k-1}) - lr_k P_k g(x_k),

    with `P = 1 / (sqrt(nu_hat) + eps)` for the adaptive ones (`nu` smooth: its change between
    two steps is neglected) and, for Adam's bias correction, `beta_k = beta1 B(k-1)/B(k)`,
    `lr_k = lr (1 - beta1)/B(k)`, `B(k) = 1 - beta1^(k+1)`."""

    beta1: float
    beta2: float | None  # None: no second moment (P = 1)
    eps: float
    bias_correction: bool
    scalar: bool
    first_moment_ema: bool  # Adam's mu = EMA of g (step (1 - beta1)); heavy ball's m = sum

    @staticmethod
    def of(m: AbstractMap) -> _Family:
        if isinstance(m, GradientDescent):
            return _Family(0.0, None, 0.0, False, False, False)
        if isinstance(m, HeavyBall) and not m.nesterov:
            return _Family(float(m.beta), None, 0.0, False, False, False)
        if isinstance(m, (RMSProp, Adam)) and not m.nesterov:
            return _Family(float(getattr(m, "beta1", 0.0)), float(m.beta2), float(m.eps),
                           bool(m.bias_correction), bool(m.scalar), True)
        raise ValueError(
            f"the momentum flows model GD, heavy ball, RMSProp and Adam (and the scalar variants), got "
            f"{type(m).__name__}; use `StableFlow` / `RodFlow` (the flows on the joint state) for it."
        )

    def coefficients(self, lr, k):
        """`(beta_k, lr_k)` at (fractional) step `k`."""
        b1 = self.beta1
        if not self.first_moment_ema:
            return b1, lr
        if not (self.bias_correction and b1 > 0):
            return b1, lr * (1.0 - b1)
        big = 1.0 - b1 ** (k + 1.0)
        small = 1.0 - b1 ** jnp.maximum(k, 0.0)
        return b1 * small / big, lr * (1.0 - b1) / big

    def precondition(self, nu, k):
        """`P = 1 / (sqrt(nu_hat) + eps)` (1 without a second moment)."""
        if self.beta2 is None:
            return 1.0
        if self.bias_correction:
            nu = nu / (1.0 - self.beta2 ** (k + 1.0))
        return 1.0 / (jnp.sqrt(jnp.maximum(nu, 0.0)) + self.eps)

    def drive(self, g2, nu):
        """`dnu/dt = (1 - beta2) (g^2 - nu)` (`g^2` averaged over parameters when scalar)."""
        if self.beta2 is None:
            return None
        return (1.0 - self.beta2) * ((jnp.mean(g2) if self.scalar else g2) - nu)


def _start(args: FlowArgs, x0):
    """`(x1 - x0, nu_1)` of the discrete run: one step of the optimiser itself from rest (from
    the warm start's state `z_K` at step `K`: `(x_{K+1} - x_K, nu_{K+1})`)."""
    z0 = args.init_state(x0)
    z1 = z0 + args.delta(z0, args.start)
    fam = _Family.of(args.map)
    nu = None
    if fam.beta2 is not None:
        n_nu = args.map.n_smooth(args.problem)
        nu = z1[z1.shape[0] - n_nu:]
        nu = nu[0] if fam.scalar else nu
    return args.params(z1) - args.params(z0), nu


def _start_centre(args: FlowArgs, x0):
    """`(c_0, x1 - x0, nu)` at the flows' start, the first centre `c_0 = (x_0 + x_1)/2`. Time `t`
    is the centre between steps `t` and `t + 1`, whose update uses the second moment at count
    `t + 1.5` (see `_Family.precondition`); the discrete run's `nu_1` (count 1) is advanced by
    half a step of `nu`'s own ODE, `dnu/dt = (1 - beta2)(g(c_0)^2 - nu)`, to count 1.5. Without
    it `nu` lags the bias correction by half a step: `P` starts `sqrt(1.5)` too large for Adam."""
    d, nu = _start(args, x0)
    c0 = args.params(args.init_state(x0)) + 0.5 * d
    fam = _Family.of(args.map)
    if nu is not None:
        nu = nu + 0.5 * fam.drive(jax.grad(args.problem.loss_flat)(c0) ** 2, nu)
    return c0, d, nu


def _sharpness(args: FlowArgs, fam: _Family, x, nu, k, U0, method, max_iters):
    """Effective sharpness `lambda_max(P H)` at `x` (the map's threshold applies)."""
    if fam.beta2 is None:
        vals, U = top_eigenpairs(args.problem.loss_flat, x, U0, method=method, max_iters=max_iters)
    else:
        scale = jnp.sqrt(fam.precondition(nu, k)) * jnp.ones_like(x)
        vals, U = preconditioned_eigenpairs(args.problem.loss_flat, x, scale, U0, method=method,
                                            max_iters=max_iters)
    return vals[0], U


class MomentumStableFlow(AbstractFlow):
    r"""The damped second-order flow of heavy ball (and of RMSProp / Adam, see below): the
    optimiser's ODE without oscillation.

    Heavy ball `x_{k+1} - x_k = beta (x_k - x_{k-1}) - lr g(x_k)`, Taylor-expanded about a smooth
    path `x(k)` to second order (`x(k+-1) = x +- x' + x''/2`), reads

    $$\frac{1 + \beta}{2}\,\ddot x + (1 - \beta)\,\dot x = -\eta\, g(x).$$

    Unlike the first-order flow on the joint state (`dz/dt = F(z) - z`, [`StableFlow`][]), it
    has the discrete run's damping (per step `sqrt(beta)` for every underdamped direction:
    rate `(1 - beta)/(1 + beta)`, against `-log sqrt(beta)`, equal to first order in `1 - beta`)
    and its ringing frequency.

    **Adam and RMSProp** are heavy ball with a preconditioner: with `P = 1/(sqrt(nu_hat) + eps)`
    varying slowly, Adam's `x_{k+1} - x_k = beta_k (x_k - x_{k-1}) - lr_k P g(x_k)` with
    `beta_k -> beta1`, `lr_k -> lr (1 - beta1)` (bias correction: `beta_k = beta1 B(k-1)/B(k)`,
    `lr_k = lr (1 - beta1)/B(k)`, `B(k) = 1 - beta1^(k+1)`); RMSProp is `beta1 = 0`. The second
    moment is a smooth variable, `dnu/dt = (1 - beta2)(g^2 - nu)` (scalar variants: the mean of
    `g^2`). The state is `(x, u = dx/dt)` (and `nu`), started at the first centre
    `(x_0 + x_1)/2` with `u = x_1 - x_0` and the discrete run's `nu_1` moved on half a step to
    the centre's count (`_start_centre`). Default integrator: Tsit5, `rtol = 1e-6`. Nesterov
    and NAdam are not covered.
    """

    name: ClassVar[str] = "stable-momentum"
    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    dt: float = 0.5
    rtol: float | None = 1e-6
    atol: float | None = 1e-9

    def __check_init__(self):
        check_solver_config(self)

    def init(self, x0, args: FlowArgs):
        return _start_centre(args, x0)

    def vector_field(self, t, y, args: FlowArgs):
        fam = _Family.of(args.map)
        k = t + 0.5
        beta, lr_k = fam.coefficients(args.lr, k)
        c, u, nu = y
        g = jax.grad(args.problem.loss_flat)(c)
        du = (2.0 / (1.0 + beta)) * (-lr_k * fam.precondition(nu, k) * g - (1.0 - beta) * u)
        return (u, du, fam.drive(g**2, nu))

    def centre(self, y):
        return y[0]

    def sharpness(self, y, args: FlowArgs, U0, t=None, *, method="auto", max_iters=40):
        k = 0.5 if t is None else t + 0.5
        return _sharpness(args, _Family.of(args.map), y[0], y[2], k, U0, method, max_iters)

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
    underdamped = 0.5 * jnp.log(jnp.maximum(beta, 1e-30))
    rate = jnp.where(real_neg, jnp.log(jnp.where(real_neg, -mu, 1.0)), underdamped)
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

    **Adam and RMSProp**, as in [`MomentumStableFlow`][]: `eta` becomes `lr_k P`, the curvature
    is the preconditioned `kappa = v . P D` (compared with the map's threshold) and `nu` is driven
    by the mean of the two ends' `g^2`.

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
        check_eps_floor(self.eps_floor)

    def rod_terms(self, c, rho, v, args: FlowArgs):
        """`(A, D, G2)`: mean gradient of the rod's ends, the rod-averaged Hessian on `v` and the
        ends' mean squared gradient (which drives `nu`)."""
        grad = jax.grad(args.problem.loss_flat)

        def finite():
            gp, gm = grad(c + rho * v), grad(c - rho * v)
            return 0.5 * (gp + gm), (gp - gm) / (2.0 * rho), 0.5 * (gp**2 + gm**2)

        def small():
            g, hv = jax.jvp(grad, (c,), (v,))
            return g, hv, g**2

        big = rho > rho_switch_at(c, self.rho_switch)
        zeros = (jnp.zeros_like(c), jnp.zeros_like(c), jnp.zeros_like(c))
        fd = gated(big, finite, zeros)
        hv = gated(~big, small, zeros)
        return tuple(jnp.where(big, p, q) for p, q in zip(fd, hv))

    def init(self, x0, args: FlowArgs):
        c0, d, nu = _start_centre(args, x0)
        return (c0, d, log_floor(c0, self.eps_floor), unit_direction(d)[0], nu)

    def vector_field(self, t, y, args: FlowArgs):
        fam = _Family.of(args.map)
        k = t + 0.5
        beta, lr_k = fam.coefficients(args.lr, k)
        c, u, s, v, nu = y
        v = v / jnp.linalg.norm(v)
        a, dv, g2 = self.rod_terms(c, jnp.exp(s), v, args)
        P = fam.precondition(nu, k)
        pdv = P * dv
        kappa = jnp.vdot(v, pdv)
        du = (2.0 / (1.0 + beta)) * (-lr_k * P * a - (1.0 - beta) * u)
        ds = floored(alternating_rate(lr_k * kappa, beta), s, log_floor(c, self.eps_floor))
        return (u, du, ds, lr_k * (pdv - kappa * v), fam.drive(g2, nu))

    def centre(self, y):
        return y[0]

    def ends(self, y):
        c, _, s, v, _ = y
        r = jnp.exp(s) * v / jnp.linalg.norm(v)
        return c + r, c - r

    def predicted_loss(self, y, args: FlowArgs):
        plus, minus = self.ends(y)
        return 0.5 * (args.problem.loss_flat(plus) + args.problem.loss_flat(minus))

    def curvature(self, y, args: FlowArgs, t=None):
        """Rod curvature `kappa = v . P D` (the effective sharpness along the rod), compared with
        the map's threshold (`(2 + 2 beta)/lr` for heavy ball)."""
        c, _, s, v, nu = y
        v = v / jnp.linalg.norm(v)
        k = 0.5 if t is None else t + 0.5
        pdv = _Family.of(args.map).precondition(nu, k) * self.rod_terms(c, jnp.exp(s), v, args)[1]
        return jnp.vdot(v, pdv)

    def sharpness(self, y, args: FlowArgs, U0, t=None, **kwargs):
        return self.curvature(y, args, t), U0

    def extras(self, y, args: FlowArgs):
        return {"rho": jnp.exp(y[2])}

    def cost_per_rhs(self):
        return {"grads": 2, "hvps": 0}
