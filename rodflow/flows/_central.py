from __future__ import annotations

from typing import ClassVar, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._derivatives import hvp
from .._lax import gated
from .._maps import AbstractPlainGradientMap
from .._spectrum import initial_vectors, resolve_method, top_eigenpairs
from ._base import AbstractFlow, FlowArgs
from ._cone_qp import solve_cone_qp


class CentralTerms(eqx.Module):
    """Everything Central Flow computes at one point `w` (see [`CentralFlow.terms`][])."""

    eigvals: jax.Array  # (k,) top Hessian eigenvalues, descending
    U: jax.Array  # (p, k) their eigenvectors (sign-aligned with the warm start)
    mask: jax.Array  # (k,) eigenpairs in the cone problem (lr * eigval > track)
    M: jax.Array  # (k, k) U^T H U
    X: jax.Array  # (k, k) psd solution of the cone problem, Sigma = U X U^T
    drift: jax.Array  # (p,) 1/2 grad_w <Sigma, H(w)> at fixed U
    grad: jax.Array  # (p,) grad L(w)


class CentralState(NamedTuple):
    """State of [`CentralFlow`][]: the point `w`, and, carried for the warm start and the extras,
    the tracked eigenvectors `U`, the factor `X` of `Sigma = U X U^T` and `s = eta * eigenvalues`."""

    centre: jax.Array  # (p,) w
    eigenvectors: jax.Array  # (p, k) U
    sigma_factor: jax.Array  # (k, k) X
    lr_eigenvalues: jax.Array  # (k,) s


class CentralFlow(AbstractFlow):
    r"""Central Flow for gradient descent (Cohen, Damian et al., arXiv:2410.24206),

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
    `vmap`, skipped unless some lane of the batch needs them).

    **Observables.** `predicted_loss = L(w) + 1/2 <Sigma, H(w)> = L + 1/2 sum X_ij H_ij`
    (recomputed exactly at `w`). `sharpness`: top Hessian eigenvalue at `w` (default of
    `AbstractFlow`). `extras`, as of the last substep: `sigma2 = tr X = tr Sigma` and
    `n_critical`, the number of eigenvalues with `eta * lambda > critical`.

    **Optimisers.** Gradient descent only: the flow uses `eta` and the Hessian of the loss
    directly (`requires = (AbstractPlainGradientMap,)`).
    """

    name: ClassVar[str] = "central"
    requires: ClassVar[tuple[type, ...]] = (AbstractPlainGradientMap,)
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

    # -- the Central Flow terms -----------------------------------------------------------------
    def _h(self):
        return self.dt if self.horizon is None else self.horizon

    def eigenpairs(self, w, U0, args: FlowArgs, iters: int):
        """Top-`k` eigenpairs at `w` warm-started from `U0`, and whether they are Ritz pairs of
        `span(U0, H U0)` (`"auto"`: a dense `eigh` when `top_eigenpairs` would use one)."""
        f = args.problem.loss_flat
        n, k = U0.shape
        method = self.eig_method
        if method == "auto":
            method = resolve_method("auto", n, k)
            method = "rr" if (method != "dense" and 2 * k < n) else method
        if method != "rr":
            return top_eigenpairs(f, w, U0, method=method, max_iters=iters)
        matvec = jax.vmap(lambda u: hvp(f, w, u), in_axes=1, out_axes=1)

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

    def terms(self, w, U0, args: FlowArgs, *, eig_iters: int | None = None) -> CentralTerms:
        """Eigenpairs, cone problem and drift at `w`, warm-starting the eigensolver from `U0`."""
        f = args.problem.loss_flat
        lr = args.lr
        k = U0.shape[1]
        vals, U = self.eigenpairs(w, U0, args, self.eig_iters if eig_iters is None else eig_iters)
        sign = jnp.sign(jnp.sum(U * U0, axis=0))
        U = U * jnp.where(sign == 0, 1.0, sign)
        mask = (lr * vals > self.track) & jnp.isfinite(vals)
        mmask = mask[:, None] & mask[None, :]
        g = jax.grad(f)(w)
        eye = jnp.eye(k, dtype=w.dtype)

        # A_ij = <grad H_ij, g> + (2/lr delta_ij - M_ij) / (lr h); M = U^T H U = diag(vals)
        # for exact or Ritz eigenpairs. <grad H_ij, g> = u_i . (d/de H(w + e g)) u_j: k jvps.
        def dHg(u):
            return jax.jvp(lambda x: hvp(f, x, u), (w,), (g,))[1]

        Ag = U.T @ jax.vmap(dHg, in_axes=1, out_axes=1)(U)
        A = 0.5 * (Ag + Ag.T) + (2.0 / lr * eye - jnp.diag(vals)) / (lr * self._h())
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
            def dH(i, j):  # grad_w (u_i . H(w) u_j), u fixed: a third-derivative term
                return jax.grad(lambda x: jnp.vdot(U[:, i], hvp(f, x, U[:, j])))(w)

            Gp = jax.vmap(dH)(jnp.asarray(iu), jnp.asarray(ju))  # (m, p), pairs i <= j
            gram = (Gp @ Gp.T)[pair][:, pair]  # (k^2, k^2): <grad H_ij, grad H_kl>
            X, _ = solve_cone_qp(A, 0.5 * gram, mask, max_iters=self.qp_iters, tol=self.qp_tol)
            return X, 0.5 * (X.reshape(-1) @ Gp[pair])

        # gated rather than lax.cond: under vmap (sweeps) only run when some lane needs it
        X, drift = gated(need, active, (jnp.zeros((k, k), w.dtype), jnp.zeros_like(w)))
        return CentralTerms(eigvals=vals, U=U, mask=mask, M=jnp.diag(vals), X=X, drift=drift, grad=g)

    def sigma(self, y, args: FlowArgs):
        """`(Sigma's factor X, eigenvectors U)` at the state's point (recomputed)."""
        t = self.terms(y.centre, y.eigenvectors, args)
        return t.X, t.U

    # -- AbstractFlow ----------------------------------------------------------------------------
    def init(self, x0, args: FlowArgs) -> CentralState:
        self.check_supported(args.map)
        z0 = args.init_state(x0)
        w0 = z0 + 0.5 * args.delta(z0, args.start)
        k = min(self.k, w0.shape[0])
        U0 = initial_vectors(w0.shape[0], k, w0.dtype)
        method = "auto" if self.eig_method == "rr" else self.eig_method
        _, U0 = top_eigenpairs(args.problem.loss_flat, w0, U0, method=method,
                               max_iters=self.init_eig_iters)
        return CentralState(w0, U0, jnp.zeros((k, k), w0.dtype), jnp.zeros((k,), w0.dtype))

    def vector_field(self, t, y: CentralState, args: FlowArgs) -> CentralState:
        w, U, X, s = y
        c = self.terms(w, U, args)
        dw = -args.lr * (c.grad + c.drift)
        return CentralState(dw, (c.U - U) / self.dt, (c.X - X) / self.dt, (args.lr * c.eigvals - s) / self.dt)

    def centre(self, y):
        return y.centre

    def predicted_loss(self, y, args: FlowArgs):
        w = y.centre
        c = self.terms(w, y.eigenvectors, args)
        return args.problem.loss_flat(w) + 0.5 * jnp.sum(c.X * c.M)

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
