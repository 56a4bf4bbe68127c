from __future__ import annotations

from typing import ClassVar, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._derivatives import hvp
from .._lax import branch
from .._maps import (
    AbstractMap,
    AbstractMomentumMap,
    AbstractPlainGradientMap,
    AbstractPreconditionedMap,
    preconditioned_eigenpairs,
)
from .._spectrum import initial_vectors, resolve_method, top_eigenpairs
from ._base import AbstractFlow, FlowArgs
from ._cone_qp import solve_cone_qp
from ._momentum import start_centre


class CentralTerms(eqx.Module):
    """Everything Central Flow computes at one point `w` (see [`CentralFlow.terms`][])."""

    eigvals: jax.Array  # (k,) top Hessian eigenvalues, descending
    U: jax.Array  # (p, k) their eigenvectors (sign-aligned with the warm start)
    mask: jax.Array  # (k,) eigenpairs in the cone problem (lr * eigval > track)
    M: jax.Array  # (k, k) U^T H U
    X: jax.Array  # (k, k) psd solution of the cone problem, Sigma = U X U^T
    drift: jax.Array  # (p,) 1/2 grad_w <Sigma, H(w)> at fixed U
    grad: jax.Array  # (p,) grad L(w)
    scale: jax.Array | None = None  # (p,) D = P^{-1/2} (None: gradient descent, D = 1)
    dnu: jax.Array | None = None  # dnu/dt of the second moments (None: gradient descent)


class CentralState(NamedTuple):
    """State of [`CentralFlow`][]: the point `w` (and, for RMSProp, the second moments `nu`),
    and, carried for the warm start and the extras, the tracked eigenvectors `U`, the factor `X`
    of `Sigma = D U X U^T D` and `s = eta * eigenvalues`."""

    centre: jax.Array  # (p,) w
    eigenvectors: jax.Array  # (p, k) U
    sigma_factor: jax.Array  # (k, k) X
    lr_eigenvalues: jax.Array  # (k,) s
    nu: jax.Array | None = None  # (n,) smooth second moments (None: gradient descent)


def is_rmsprop_like(opt_map: AbstractMap) -> bool:
    """A diagonal preconditioner from a second moment, without momentum or weight decay (RMSProp,
    scalar RMSProp): the maps whose Central Flow [`CentralFlow`][] derives."""
    return (isinstance(opt_map, AbstractPreconditionedMap) and isinstance(opt_map, AbstractMomentumMap)
            and opt_map.momentum() == 0 and opt_map.decoupled_decay() is None)


class CentralFlow(AbstractFlow):
    r"""Central Flow (Cohen, Damian et al., arXiv:2410.24206); for gradient descent,

    $$\frac{dw}{dt} = -\eta \Big[ \nabla L(w) + \tfrac12 \nabla_w \langle \Sigma, H(w) \rangle \Big],
    \qquad \Sigma = U X U^\top,$$

    with `U` the top-`k` Hessian eigenvectors (held fixed inside the gradient) and `X` psd.
    Time is in GD steps. `X` solves the semidefinite complementarity problem that keeps
    `eta * U^T H U <= 2` one substep `h` ahead: with `H_ij(w) = u_i . H(w) u_j`,
    `M = [H_ij]`, `G_ij,kl = <grad H_ij, grad H_kl>` (third-derivative terms) and
    `w' = w + h dw/dt`, to first order

    $$M(w') = M - h\eta\,(A_g + B[X]),\quad (A_g)_{ij} = \langle \nabla H_{ij}, \nabla L\rangle,
    \quad B[X]_{ij} = \tfrac12 \textstyle\sum_{kl} G_{ij,kl} X_{kl},$$

    so `2/eta - M(w') psd` reads `A + B[X] psd` with `A = A_g + (2/eta I - M) / (eta h)`,
    and `X psd, A + B[X] psd, <X, A + B[X]> = 0` (the minimiser of
    `1/2 <X, B[X]> + <A, X>` over psd `X`; `B` is a Gram operator, hence psd). Where `X` is
    positive the eigenvalue sits at `2/eta` after the substep; elsewhere it stays below. In the
    limit `h -> 0` with the critical eigenvalues at `2/eta` this is the paper's condition
    `d/dt (U^T H U) <= 0` with complementarity; the gap term also pulls an eigenvalue that
    overshot `2/eta` back within one substep. For one critical eigenvalue at `2/eta` it gives
    `sigma^2 = X = max(0, -2 <grad S, grad L> / |grad S|^2)`.

    **Eigenpairs.** The top `k` eigenpairs (default 4) are recomputed at every right-hand side,
    warm-started from the previous substep's eigenvectors: by `eig_iters` (default 1)
    Rayleigh-Ritz steps on `span(U, H U)` (`eig_method="auto"` or `"rr"`; 2k HVPs each, so
    over the 4 substeps of a GD step the block is refined like 4 steps of a block Krylov
    method), or by a dense `eigh` for small problems (`"auto"` follows `top_eigenpairs`), or
    by any `top_eigenpairs` method. The initial block is a full LOBPCG solve. Newly sharpening
    directions are thus picked up as the run proceeds. Eigenpairs with `eta * lambda > track`
    (default 1.5) enter the cone problem; the rest are masked out. The gap term makes the
    result insensitive to `track` as long as an eigenvalue cannot jump from below `track/eta`
    to above `2/eta` within one substep. `critical` (default 1.95) only labels the
    eigenvalues reported as critical in `extras` (`n_critical`).

    **Integration.** The state is [`CentralState`][] `(w, U, X, s)` with `s = eta * eigenvalues`.
    `U`, `X`, `s` are carried for the warm start and the extras only: their "derivative" is
    `(U_new - U) / dt`, so one Euler substep of size `dt` replaces them by the values
    computed at the substep's start point; `dw/dt` never uses the carried values
    unrefreshed. Use `diffrax.Euler()` (default, `dt = 0.25`, i.e. 4 substeps per GD step)
    with a constant step; `horizon` (default `dt`) is the look-ahead `h` of the cone problem.
    Everything is `jit`- and `vmap`-able (the cone QP is a fixed-shape `lax.while_loop`).
    Cost: `A` needs only `k` third-order jvps; `X = 0` exactly when `A` is psd on the tracked
    block, and then the `k(k+1)/2` third-derivative gradients and the QP are skipped (under
    `vmap`, skipped unless some lane of the batch needs them). `dt=0.5, k=2` costs about a
    third of the default; on `mlp-teacher` and `mlp-digits` it moved the tracking error by
    -6% to +2% (docs, benchmarks: "Cost of a step"), but `k` must be at least the number of
    eigenvalues at the edge (`n_critical`).

    **Observables.** `predicted_loss = L(w) + 1/2 <Sigma, H(w)> = L + 1/2 sum X_ij H_ij`
    (recomputed exactly at `w`). `sharpness`: top Hessian eigenvalue at `w` (default of
    `AbstractFlow`). `extras`, as of the last substep: `sigma2 = tr X` (`= tr Sigma` for GD) and
    `n_critical`, the number of eigenvalues with `eta * lambda > critical`.

    **RMSProp and scalar RMSProp** (the paper's adaptive central flows). RMSProp steps
    `x' = x - eta g / P` with `P = sqrt(nu_hat) + eps` and `nu' = beta2 nu + (1 - beta2) g^2` (the
    mean of `g^2` for the scalar variant). Its stability is that of GD in the metric `P`: the
    effective sharpness is `lambda_max(P^{-1} H)` (computed as that of `D H D`, `D = P^{-1/2}`),
    threshold `2/eta`. The flow keeps `nu` as a smooth variable and oscillates in `D`-scaled
    directions, `Sigma = D U X U^T D` with `U` the top eigenvectors of `D H D`:

    $$\frac{dw}{dt} = -\eta\, P^{-1}\Big[\nabla L(w) + \tfrac12 \nabla_w \langle \Sigma, H(w)
    \rangle\Big], \qquad \frac{d\nu}{dt} = (1 - \beta_2)\big(\nabla L^2 + \mathrm{diag}(H \Sigma H)
    - \nu\big),$$

    the second because GD's `g` oscillates as `g + H delta` with `E[delta delta^T] = Sigma`, so
    `E[g^2] = g^2 + diag(H Sigma H)`. The constraint is on `M = U^T D H D U`; its derivative now
    has two parts: the motion of `w` (as for GD, with `<grad H_ij, P^{-1} ...>` in place of
    `<grad H_ij, ...>`) and the motion of `D` through `nu`, `dM = 2 sym(U^T diag(dD / D) D H D U)`.
    Both are affine in `X`, so `X` solves the same cone problem with
    `B = 1/2 G P^{-1} G^T + B_nu`: the oscillation raises `nu`, which lowers `P^{-1} H`. `B_nu`
    uses the eigen-relation `D H D u_j = lambda_j u_j` with its eigenvalue factor symmetrised
    (exact for one tracked eigenvalue, and when the tracked eigenvalues are equal, as at the
    threshold), which keeps it psd; the gap term of `A` corrects what the linearisation
    misses. `nu` starts at the discrete run's `nu_1` moved on half a step (the first centre's count,
    as the momentum flows), and `P` is evaluated at the centre's count `t + 3/2` (bias
    correction, if any). The state carries `nu` ([`CentralState`][]); the sharpness reported
    is the flow's own `lambda_max(P^{-1} H)`, the constrained quantity. Cost per right-hand side:
    `k` more HVPs than for GD (`D H D U`, for `diag(H Sigma H)`).

    **Optimisers.** Gradient descent, RMSProp and scalar RMSProp (with or without bias
    correction). Not Adam: its first moment adds the heavy-ball ringing of the momentum, whose
    central dynamics (an oscillation at the threshold `(2 + 2 beta1)/((1 - beta1) eta)` of a
    second-order system) this derivation does not cover; maps with momentum or weight decay
    are refused with a one-line error.
    """

    name: ClassVar[str] = "central"
    # gradient descent or an RMSProp-type map: see `unsupported`
    requires: ClassVar[tuple[type, ...]] = ()
    solver: diffrax.AbstractSolver = diffrax.Euler()
    dt: float = 0.25
    rtol: float | None = None
    atol: float | None = None
    k: int = eqx.field(static=True, default=4)
    track: float = 1.5
    critical: float = 1.95
    horizon: float | None = None
    eig_method: str = eqx.field(static=True, default="auto")
    eig_iters: int = eqx.field(static=True, default=1)
    init_eig_iters: int = eqx.field(static=True, default=100)
    qp_iters: int = eqx.field(static=True, default=500)
    qp_tol: float = 1e-10

    def __check_init__(self):
        if not (isinstance(self.k, int) and 1 <= self.k <= 8):
            raise ValueError(f"`k` must be an integer in 1..8, got {self.k!r}.")
        if not 0 <= self.track <= 2:
            raise ValueError(f"`track` must be in [0, 2], got {self.track!r}.")
        if self.horizon is not None and not self.horizon > 0:
            raise ValueError(f"`horizon` must be positive, got {self.horizon!r}.")
        if self.eig_method == "krylov":
            raise ValueError("Central Flow's own Krylov tracker is eig_method='rr' (Rayleigh-Ritz on "
                             "span(U, H U), eig_iters times per right-hand side; the default on large "
                             "problems); 'krylov' is the discrete run's fixed-cost estimator.")

    # -- the Central Flow terms -----------------------------------------------------------------
    def _h(self):
        return self.dt if self.horizon is None else self.horizon

    def eigenpairs(self, w, U0, args: FlowArgs, iters: int, scale=None):
        """Top-`k` eigenpairs at `w` warm-started from `U0` of `H` (gradient descent) or of
        `D H D` (`scale = D = P^{-1/2}`, the spectrum of `P^{-1} H`), by Rayleigh-Ritz steps on
        `span(U0, H U0)` or by `top_eigenpairs` (`"auto"`: a dense `eigh` when `top_eigenpairs`
        would use one)."""
        f = args.problem.loss_flat
        n, k = U0.shape
        method = self.eig_method
        if method == "auto":
            method = resolve_method("auto", n, k)
            method = "rr" if (method != "dense" and 2 * k < n) else method
        if method != "rr":
            if scale is None:
                return top_eigenpairs(f, w, U0, method=method, max_iters=iters)
            return preconditioned_eigenpairs(f, w, scale, U0, method=method, max_iters=iters)
        matvec = jax.vmap(lambda u: _hd(f, w, u, scale), in_axes=1, out_axes=1)

        def rr_step(_, U):
            # Rayleigh-Ritz on the block Krylov space span(U, H U): 2k HVPs. A Householder QR of
            # [U, residual] gives an orthonormal basis Q = [Q1, Q2] even when the residual
            # vanishes (converged U); Q1 = U R11^-1, so H Q1 = (H U) R11^-1 needs no new HVPs.
            U, _ = jnp.linalg.qr(U)
            HU = matvec(U)
            Res = HU - U @ (U.T @ HU)
            Q, R = jnp.linalg.qr(jnp.concatenate([U, Res], axis=1))
            HQ1 = jax.scipy.linalg.solve_triangular(R[:k, :k], HU.T, trans=1, lower=False).T
            Q2 = Q[:, k:]
            T = Q.T @ jnp.concatenate([HQ1, matvec(Q2)], axis=1)
            vals, S = jnp.linalg.eigh(0.5 * (T + T.T))
            return Q @ S[:, ::-1][:, :k]

        U = jax.lax.fori_loop(0, iters, rr_step, U0)
        HU = matvec(U)
        T = U.T @ HU
        vals, S = jnp.linalg.eigh(0.5 * (T + T.T))
        return vals[::-1], U @ S[:, ::-1]

    def terms(self, w, U0, args: FlowArgs, *, eig_iters: int | None = None, nu=None, t=None) -> CentralTerms:
        """Eigenpairs, cone problem and drift at `w` (with the second moments `nu` for RMSProp)
        at time `t`, warm-starting the eigensolver from `U0`."""
        f = args.problem.loss_flat
        lr = args.lr_at(None if t is None else t + 0.5)
        k = U0.shape[1]
        D = count = None
        if nu is not None:
            D, count = _centre_scale(args.map, nu, t, w)
        vals, U = self.eigenpairs(w, U0, args, self.eig_iters if eig_iters is None else eig_iters, D)
        sign = jnp.sign(jnp.sum(U * U0, axis=0))
        U = U * jnp.where(sign == 0, 1.0, sign)
        mask = (lr * vals > self.track) & jnp.isfinite(vals)
        mmask = mask[:, None] & mask[None, :]
        g = jax.grad(f)(w)
        eye = jnp.eye(k, dtype=w.dtype)
        move = g if D is None else D * D * g  # -dw/dt / lr at X = 0

        # A_ij = <grad H_ij, P^-1 g> + (2/lr delta_ij - M_ij) / (lr h); M = U^T D H D U =
        # diag(vals) for exact or Ritz eigenpairs. <grad H_ij, v> = u_i . (d/de D H(w + e v) D) u_j.
        def dHg(u):
            return jax.jvp(lambda x: _hd(f, x, u, D), (w,), (move,))[1]

        Ag = U.T @ jax.vmap(dHg, in_axes=1, out_axes=1)(U)
        A = 0.5 * (Ag + Ag.T) + (2.0 / lr * eye - jnp.diag(vals)) / (lr * self._h())
        if D is not None:
            # the second moments move D: dM = 2 sym(U^T diag(dD / D) (D H D) U), with
            # dnu = (1 - beta2)(g^2 - nu) at X = 0 (and the count's own drift, bias correction)
            AU = jax.vmap(lambda u: _hd(f, w, u, D), in_axes=1, out_axes=1)(U)
            dnu0 = args.map.nu_drive(g * g, nu)
            dD0 = jax.jvp(lambda n, c: _scale(args.map, n, c), (nu, count),
                          (dnu0, jnp.ones_like(count)))[1] * jnp.ones_like(w)
            An = U.T @ ((dD0 / D)[:, None] * AU)
            A = A - (An + An.T) / lr
        A = jnp.where(mmask, A, 0.0)
        # X = 0 solves the cone problem iff A is psd on the tracked block: skip the rest then.
        lift = jnp.diag(jnp.where(mask, 0.0, 1.0 + jnp.max(jnp.abs(A))))
        need = jnp.any(mask) & (jnp.linalg.eigvalsh(A + lift)[0] < 0)

        iu, ju = np.triu_indices(k)
        pair = np.zeros((k, k), np.int32)
        pair[iu, ju] = np.arange(len(iu))
        pair[ju, iu] = np.arange(len(iu))
        pair = pair.reshape(-1)

        def active():
            def dH(i, j):  # grad_w (u_i . D H(w) D u_j), u and D fixed: a third-derivative term
                return jax.grad(lambda x: jnp.vdot(U[:, i], _hd(f, x, U[:, j], D)))(w)

            Gp = jax.vmap(dH)(jnp.asarray(iu), jnp.asarray(ju))  # (m, p), pairs i <= j
            if D is None:
                gram = (Gp @ Gp.T)[pair][:, pair]  # (k^2, k^2): <grad H_ij, grad H_kl>
                B = 0.5 * gram
            else:
                gram = ((Gp * (D * D)) @ Gp.T)[pair][:, pair]  # <grad H_ij, P^-1 grad H_kl>
                B = 0.5 * gram + _nu_operator(args.map, U, D, nu, count, vals) / lr
            X, _ = solve_cone_qp(A, B, mask, max_iters=self.qp_iters, tol=self.qp_tol)
            return X, 0.5 * (X.reshape(-1) @ Gp[pair])

        # under the engine's vmap (sweeps): run only when some lane needs it
        X, drift = branch(need, active, lambda: (jnp.zeros((k, k), w.dtype), jnp.zeros_like(w)))
        dnu = None
        if D is not None:  # dnu/dt = (1 - beta2)(g^2 + diag(H Sigma H) - nu), H D U = (D H D U) / D
            Y = AU / D[:, None]
            dnu = args.map.nu_drive(g * g + jnp.sum((Y @ X) * Y, axis=1), nu)
        return CentralTerms(eigvals=vals, U=U, mask=mask, M=jnp.diag(vals), X=X, drift=drift, grad=g,
                            scale=D, dnu=dnu)

    def sigma(self, y, args: FlowArgs, t=None):
        """`(Sigma's factor X, eigenvectors U)` at the state's point (recomputed)."""
        c = self.terms(y.centre, y.eigenvectors, args, nu=y.nu, t=t)
        return c.X, c.U

    # -- AbstractFlow ----------------------------------------------------------------------------
    def unsupported(self, opt_map: AbstractMap) -> str | None:
        if isinstance(opt_map, AbstractPlainGradientMap) or is_rmsprop_like(opt_map):
            return None
        return (f"needs gradient descent or an RMSProp-type map (a diagonal preconditioner without "
                f"momentum or weight decay: RMSProp, ScalarRMSProp); {opt_map.name} is neither")

    def init(self, x0, args: FlowArgs) -> CentralState:
        self.check_supported(args.map)
        nu = D = None
        if isinstance(args.map, AbstractPlainGradientMap):
            z0 = args.init_state(x0)
            w0 = z0 + 0.5 * args.delta(z0, args.start)
        else:  # the first centre, nu moved on to its count (as the momentum flows)
            w0, _, nu = start_centre(args, x0)
            D, _ = _centre_scale(args.map, nu, args.start, w0)
        k = min(self.k, w0.shape[0])
        U0 = initial_vectors(w0.shape[0], k, w0.dtype)
        method = "auto" if self.eig_method == "rr" else self.eig_method
        if D is None:
            _, U0 = top_eigenpairs(args.problem.loss_flat, w0, U0, method=method,
                                   max_iters=self.init_eig_iters)
        else:
            _, U0 = preconditioned_eigenpairs(args.problem.loss_flat, w0, D, U0, method=method,
                                              max_iters=self.init_eig_iters)
        return CentralState(w0, U0, jnp.zeros((k, k), w0.dtype), jnp.zeros((k,), w0.dtype), nu)

    def vector_field(self, t, y: CentralState, args: FlowArgs) -> CentralState:
        w, U, X, s, nu = y
        c = self.terms(w, U, args, nu=nu, t=t)
        lr = args.lr_at(t + 0.5)
        if c.scale is None:
            dw = -lr * (c.grad + c.drift)
        else:
            dw = -lr * (c.scale * c.scale) * (c.grad + c.drift)
        return CentralState(dw, (c.U - U) / self.dt, (c.X - X) / self.dt, (lr * c.eigvals - s) / self.dt,
                            c.dnu)

    def centre(self, y):
        return y.centre

    def predicted_loss(self, y, args: FlowArgs):
        return self.predicted_loss_at(None, y, args)

    def predicted_loss_at(self, t, y, args: FlowArgs):
        """`L(w) + 1/2 <Sigma, H(w)>` with `Sigma` recomputed at `w` and time `t` (`t=None`:
        step 0), which sets the step size (a schedule) and the count of `P` (bias correction)."""
        w = y.centre
        c = self.terms(w, y.eigenvectors, args, nu=y.nu, t=t)
        return args.problem.loss_flat(w) + 0.5 * jnp.sum(c.X * c.M)

    def sharpness(self, y, args: FlowArgs, U0, t=None, *, method="auto", max_iters=40):
        if y.nu is None:
            return super().sharpness(y, args, U0, t, method=method, max_iters=max_iters)
        D, _ = _centre_scale(args.map, y.nu, t, y.centre)
        vals, U = preconditioned_eigenpairs(args.problem.loss_flat, y.centre, D, U0, method=method,
                                            max_iters=max_iters)
        return vals[0], U

    def extras(self, y, args: FlowArgs):
        X, s = y.sigma_factor, y.lr_eigenvalues
        return {"sigma2": jnp.trace(X), "n_critical": jnp.sum(s > self.critical).astype(X.dtype)}

    def cost_per_rhs(self):
        # Worst case (EoS phase, Rayleigh-Ritz tracker): 1 gradient; 2k HVPs per tracker
        # iteration plus k for the Ritz values; k third-order jvps u_i . D(H u_j)[g] for A
        # (each counted as 2 HVPs); and, when X != 0, k(k+1)/2 third-derivative gradients
        # grad(u_i . H u_j), each a reverse pass through an HVP (counted as 2 HVPs). The
        # predicted loss (once per step, outside the solver) recomputes the same terms.
        k = self.k
        return {"grads": 1, "hvps": 2 * k * self.eig_iters + k + 2 * k + k * (k + 1)}


def _hd(f, x, u, D):
    """`D H(x) D u` (`H(x) u` when `D` is `None`)."""
    if D is None:
        return hvp(f, x, u)
    return D * hvp(f, x, D * u)


def _scale(opt_map, nu, count):
    """`D = P^{-1/2}`, `P = sqrt(nu_hat) + eps` of the second moments `nu` at `count`."""
    return jax.lax.rsqrt(opt_map.preconditioner(nu, count))


def _centre_scale(opt_map, nu, t, w):
    """`(D, count)`: `D = P^{-1/2}` of the smooth second moments `nu` at the count of the step
    the centre at time `t` models, `count = t + 3/2` (`t=None`: time 0), broadcast like `w`."""
    count = jnp.asarray(1.5 if t is None else t + 1.5, w.dtype)
    return _scale(opt_map, nu, count) * jnp.ones_like(w), count


def _nu_operator(opt_map, U, D, nu, count, vals):
    """The part of `B` that comes from the second moments, times `eta`. The oscillation
    `Sigma = D U X U^T D` raises `nu` by `dnu = (1 - beta2) N(diag(H Sigma H))` (`N`: the
    identity, or the mean over the parameters for the scalar variant), which lowers `D` and so
    `M = U^T D H D U`: `-dM_ij = -2 sym sum_p u_ip (dD_p / D_p) (D H D u_j)_p`. With the
    eigen-relation `D H D u_j = lambda_j u_j` this is

        -dM_ij = -(lambda_i + lambda_j) sum_p u_ip u_jp (dD_p / D_p),
        dD = dD/dnu (1 - beta2) N(sum_kl lambda_k lambda_l X_kl u_k u_l / D^2),

    an operator of degree one in the output's and two in the input's eigenvalues. The factor
    `(lambda_i + lambda_j)/2 * lambda_k lambda_l` is taken as `(lambda_i lambda_j)^(3/4)
    (lambda_k lambda_l)^(3/4)`: exact for one tracked eigenvalue and when the tracked
    eigenvalues are equal (all at the threshold, where the constraint binds), and it makes the
    operator a congruence of a psd one (`dD/dnu < 0`; `N` is a positive diagonal or a positive
    multiple of the averaging projector). Symmetrised against rounding."""
    p, k = U.shape
    c = jnp.maximum(vals, 0.0) ** 0.75
    Q = ((U * c)[:, :, None] * (U * c)[:, None, :]).reshape(p, k * k)
    zero = jnp.zeros_like(nu)

    def column(q):
        dnu = opt_map.nu_drive(q / (D * D), zero)
        dD = jax.jvp(lambda n: _scale(opt_map, n, count), (nu,), (dnu,))[1]
        return (dD * jnp.ones_like(D)) / D

    cols = jax.vmap(column, in_axes=1, out_axes=1)(Q)  # (p, k^2): dD / D per column of vec X
    B = -2.0 * (Q.T @ cols)
    return 0.5 * (B + B.T)
