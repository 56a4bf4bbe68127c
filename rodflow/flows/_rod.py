from __future__ import annotations

from typing import ClassVar, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from .._derivatives import directional_second
from .._lax import gated
from ._base import AbstractFlow, FlowArgs, check_solver_config


def check_eps_floor(eps_floor) -> None:
    if eps_floor is not None and not eps_floor >= 0:
        raise ValueError(f"`eps_floor` must be >= 0 (0 disables the floor), got {eps_floor}.")


def log_floor(c, eps_floor=None):
    """The noise floor of a rod centred at `c`: `log(eps_floor |c|)`, with `eps_floor=None` the
    machine epsilon of `c`'s dtype (`-inf` when `eps_floor = 0`)."""
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


class RodFlow(AbstractFlow):
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
    `smooth_nu=True` the second moments `nu` (the last `map.n_smooth` entries of `z`) carry no
    rod component: the rod lives on `(params, first moment)`, both ends share the smooth `nu`,
    and `dnu/dt` is the mean of the ends' `nu` updates (`nu_at="ends"`, which keeps the
    oscillation's `g^2`) or the update at the centre (`nu_at="centre"`, one more gradient).

    **Integration.** Default: explicit Euler with `dt = 0.5` (4 gradient evaluations per GD
    step), measured as accurate as Tsit5 on `mlp-digits` (see README and
    `benchmarks/results/`). `v` is renormalised inside the vector field, so solver drift off the
    unit sphere is harmless.
    """

    name: ClassVar[str] = "rod"
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
        check_solver_config(self)
        if self.variant not in ("exact", "taylor"):
            raise ValueError(f"`variant` must be 'exact' or 'taylor', got {self.variant!r}.")
        check_eps_floor(self.eps_floor)

    # -- helpers ---------------------------------------------------------------------------------
    def _rho_switch(self, c):
        return rho_switch_at(c, self.rho_switch)

    def log_floor(self, c):
        """`s_min = log(eps_floor |c|)` (`-inf` when the floor is disabled)."""
        return log_floor(c, self.eps_floor)

    def rod_terms(self, c, rho, v, args: FlowArgs, t=None, w=None):
        """`(A, M)`: mean step of the rod's ends and rod-averaged Jacobian of delta along v
        (see [`rod_terms_nu`][] for the smooth-`nu` variant)."""
        a, m, _ = self.rod_terms_nu(c, rho, v, args, t, w)
        return a, m

    def rod_terms_nu(self, c, rho, v, args: FlowArgs, t=None, w=None):
        """`(A, M, dnu)`; `w` is the smooth second moment (`None`: the rod is on all of `z`)."""
        n = c.shape[0]
        n_w = 0 if w is None else w.shape[0]
        if w is None:
            def delta(x):
                return args.delta(x, t), jnp.zeros((0,), c.dtype)
        else:
            def delta(x):
                d = args.delta(jnp.concatenate([x, w]), t)
                return d[:n], d[n:]

        def small(_):
            (a0, w0), (m, _) = jax.jvp(delta, (c,), (v,))
            return a0, m, w0

        def finite(_):
            (dp, wp), (dm, wm) = delta(c + rho * v), delta(c - rho * v)
            return 0.5 * (dp + dm), (dp - dm) / (2.0 * rho), 0.5 * (wp + wm)

        if self.variant == "taylor":
            a0, m, w0 = small(None)
            a = a0 + 0.5 * rho**2 * directional_second(lambda x: delta(x)[0], c, v)
        else:
            # Two gated branches rather than `lax.cond`: under `vmap` (sweeps) a branch is only
            # evaluated when some lane of the batch needs it.
            big = rho > self._rho_switch(c)
            zeros = (jnp.zeros_like(c), jnp.zeros_like(c), jnp.zeros((n_w,), c.dtype))
            fd = gated(big, lambda: finite(None), zeros)
            hv = gated(~big, lambda: small(None), zeros)
            a, m, w0 = (jnp.where(big, p, q) for p, q in zip(fd, hv))
        if w is not None and self.nu_at == "centre":
            w0 = delta(c)[1]
        return a, m, w0

    # -- AbstractFlow ----------------------------------------------------------------------------
    def init(self, x0, args: FlowArgs):
        z0 = args.init_state(x0)
        d0 = args.delta(z0, args.start)
        w0 = None
        if self.smooth_nu:
            n = z0.shape[0] - args.map.n_smooth(args.problem)
            w0 = z0[n:] + 0.5 * d0[n:]
            z0, d0 = z0[:n], d0[:n]
        v0, norm = unit_direction(d0)
        c0 = z0 + 0.5 * d0
        s0 = jnp.where(norm > 0, jnp.log(jnp.where(norm > 0, 0.5 * norm, 1.0)), self.log_floor(c0))
        return (c0, s0, v0) if w0 is None else (c0, s0, v0, w0)

    def vector_field(self, t, y, args: FlowArgs):
        c, s, v = y[:3]
        w = y[3] if len(y) > 3 else None
        v = v / jnp.linalg.norm(v)
        rho = jnp.exp(s)
        a, m, dw = self.rod_terms_nu(c, rho, v, args, t + 0.5, w)
        q = jnp.vdot(v, m)
        ds = -2.0 - q
        out = (a, floored(ds, s, self.log_floor(c)), -(m - q * v))
        return out if w is None else out + (dw,)

    def centre(self, y):
        return y[0] if len(y) == 3 else jnp.concatenate([y[0], y[3]])

    def ends(self, y):
        c, s, v = y[:3]
        r = jnp.exp(s) * v / jnp.linalg.norm(v)
        if len(y) == 3:
            return c + r, c - r
        return jnp.concatenate([c + r, y[3]]), jnp.concatenate([c - r, y[3]])

    def predicted_loss(self, y, args: FlowArgs):
        plus, minus = self.ends(y)
        return 0.5 * (args.problem.loss_flat(args.params(plus)) + args.problem.loss_flat(args.params(minus)))

    def curvature(self, y, args: FlowArgs, t=None):
        """Rod curvature `kappa` in units of the map's threshold (`-q / lr` for GD, i.e. `v . D`;
        `(-q/2) * threshold(lr)` in general: the rod grows iff it exceeds the threshold)."""
        c, s, v = y[:3]
        w = y[3] if len(y) > 3 else None
        v = v / jnp.linalg.norm(v)
        _, m, _ = self.rod_terms_nu(c, jnp.exp(s), v, args, None if t is None else t + 0.5, w)
        return args.map.rod_sharpness(jnp.vdot(v, m), args.lr)

    def sharpness(self, y, args: FlowArgs, U0, t=None, **kwargs):
        return self.curvature(y, args, t), U0

    def extras(self, y, args: FlowArgs):
        return {"rho": jnp.exp(y[1])}

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
