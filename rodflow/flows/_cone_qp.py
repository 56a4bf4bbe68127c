"""A small semidefinite complementarity problem (cone QP), solved inside JAX.

Given a symmetric `A` (`k x k`) and a linear operator `B` on symmetric `k x k` matrices that is
positive semidefinite (`<X, B[X]> >= 0`), find

    X psd,   A + B[X] psd,   <X, A + B[X]> = 0,

which (for psd `B`) is the optimality condition of

    min_X  1/2 <X, B[X]> + <A, X>   over psd X.

`B` is given as a `(k^2, k^2)` matrix acting on `vec(X)` (row-major `X.reshape(-1)`); only its
action on symmetric matrices matters, and `B[X]` is symmetrised.

**Method.** Accelerated projected gradient (FISTA) with gradient-based adaptive restart, after
a diagonal congruence scaling `X = D Y D` (`D_ii = B_{ii,ii}^{-1/4}`, which keeps the psd cone
and makes the diagonal of the scaled operator 1). The projection onto the psd cone is by
`jnp.linalg.eigh`. The loop is a `lax.while_loop` that stops when the fixed-point residual
`|X - P(X - grad/L)| L` falls below `tol` times the problem's scale, or after `max_iters`. All
shapes are static: an optional boolean `mask` (length `k`) restricts `X` to the active
principal block (rows/columns outside it are zero), so the active size can vary under `jit`
and `vmap` while `k` stays fixed. For one active index the first iteration is already exact:
`x = max(0, -a/b)`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


class ConeQPInfo(eqx.Module):
    """Diagnostics of [`solve_cone_qp`][]: iterations used, final fixed-point residual
    (relative) and the complementarity residuals of the returned `X`."""

    iters: Array
    residual: Array
    min_eig_x: Array
    min_eig_slack: Array
    complementarity: Array


def _sym(M):
    return 0.5 * (M + jnp.swapaxes(M, -1, -2))


def project_psd(X: Float[Array, "k k"]) -> Float[Array, "k k"]:
    """Euclidean projection of a symmetric matrix onto the psd cone (clip eigenvalues at 0)."""
    w, V = jnp.linalg.eigh(_sym(X))
    return _sym((V * jnp.maximum(w, 0.0)) @ V.T)


def apply_op(B: Float[Array, "kk kk"], X: Float[Array, "k k"]) -> Float[Array, "k k"]:
    """`B[X]` for `B` a `(k^2, k^2)` matrix on row-major `vec(X)`, symmetrised."""
    k = X.shape[-1]
    return _sym((B @ X.reshape(-1)).reshape(k, k))


def solve_cone_qp(
    A: Float[Array, "k k"],
    B: Float[Array, "kk kk"],
    mask: Bool[Array, " k"] | None = None,
    *,
    max_iters: int = 500,
    tol: float = 1e-10,
) -> tuple[Float[Array, "k k"], ConeQPInfo]:
    """Solve the semidefinite complementarity problem `X psd, A + B[X] psd, <X, A + B[X]> = 0`.

    **Arguments:**

    - `A`: symmetric `(k, k)`.
    - `B`: `(k^2, k^2)` psd operator on `vec(X)` (row-major).
    - `mask`: optional `(k,)` booleans, the active indices; `X` is zero outside the active
      block and the conditions hold on that block.
    - `max_iters`: iteration cap of the `lax.while_loop`.
    - `tol`: relative tolerance on the fixed-point residual, raised to `10 eps` of the dtype
      (1.2e-6 in float32): below it the residual is rounding, and the loop would run to
      `max_iters` (on 20 random problems in float32, `tol 1e-10` ran to the cap of 500 on 12;
      at the floor they stop after 24 iterations at the median, 69 at most, with `X` within
      2.5e-5 of the float64 solution instead of 2.8e-6: `benchmarks/cone_qp_float32.py`).

    **Returns:** `(X, info)`, see [`ConeQPInfo`][].
    """
    k = A.shape[-1]
    dtype = A.dtype
    tol = max(tol, 10 * float(jnp.finfo(dtype).eps))
    A = _sym(A)
    if mask is None:
        mask = jnp.ones((k,), bool)
    mm = (mask[:, None] & mask[None, :]).reshape(-1)
    mmf = mm.astype(dtype)
    # Restrict the operator to the active block (zero elsewhere).
    Bm = B * mmf[:, None] * mmf[None, :]
    A = A * mmf.reshape(k, k)

    # Diagonal congruence scaling X = D Y D: B'[Y] = D B[D Y D] D, A' = D A D.
    diag_idx = jnp.arange(k) * (k + 1)
    bdiag = jnp.diagonal(Bm)[diag_idx]
    tiny = jnp.finfo(dtype).tiny ** 0.25
    d = jnp.where(mask & (bdiag > tiny), jnp.abs(bdiag) ** -0.25, 1.0)
    dd = (d[:, None] * d[None, :]).reshape(-1)
    Bs = Bm * dd[:, None] * dd[None, :]
    As = A * dd.reshape(k, k)
    # Lipschitz constant of the gradient on symmetric matrices (<= the spectral norm).
    L = jnp.max(jnp.linalg.eigvalsh(_sym(Bs)))
    L = jnp.maximum(L, jnp.finfo(dtype).eps * (1.0 + jnp.max(jnp.abs(Bs))))
    scale = jnp.linalg.norm(As) + jnp.finfo(dtype).tiny

    def grad(Y):
        return apply_op(Bs, Y) + As

    def prox(Y):
        return project_psd(Y - grad(Y) / L) * mmf.reshape(k, k)

    def cond(state):
        i, _, _, _, res = state
        return (i < max_iters) & (res > tol)

    def body(state):
        i, X, Z, t, _ = state
        X_new = prox(Z)
        res = jnp.linalg.norm(X_new - Z) * L / (scale + L * jnp.linalg.norm(X_new))
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        # Adaptive restart (O'Donoghue & Candes): drop momentum when it points uphill.
        restart = jnp.vdot(Z - X_new, X_new - X) > 0
        beta = jnp.where(restart, 0.0, (t - 1.0) / t_new)
        t_new = jnp.where(restart, 1.0, t_new)
        Z_new = X_new + beta * (X_new - X)
        return i + 1, X_new, Z_new, t_new, res

    Y0 = jnp.zeros((k, k), dtype)
    one = jnp.asarray(1.0, dtype)
    state = (jnp.asarray(0, jnp.int32), Y0, Y0, one, jnp.asarray(jnp.inf, dtype))
    iters, Y, _, _, res = jax.lax.while_loop(cond, body, state)

    # Face polish: with the rank of the solution read off the first-order iterate, the problem
    # on that face is linear; solve it exactly and keep whichever candidate has the smallest
    # natural residual |Y - P(Y - grad(Y))|. This removes the slow tail of FISTA on
    # ill-conditioned operators.
    def natural_residual(Y):
        return jnp.linalg.norm(Y - project_psd(Y - grad(Y)) * mmf.reshape(k, k))

    w, V = jnp.linalg.eigh(Y)
    W = jnp.kron(V, V)  # vec(V Z V^T) = (V kron V) vec(Z), row-major
    K = _sym(W.T @ _sym(Bs) @ W)
    rhs = -(W.T @ As.reshape(-1))
    candidates = [Y]
    for rel in (1e-3, 1e-6, 1e-9):
        keep = w > rel * jnp.maximum(jnp.max(w), jnp.finfo(dtype).tiny)
        km = (keep[:, None] & keep[None, :]).reshape(-1).astype(dtype)
        Kf = K * km[:, None] * km[None, :] + jnp.diag(1.0 - km)
        ev, Q = jnp.linalg.eigh(Kf)
        cut = jnp.finfo(dtype).eps * k * k * jnp.max(jnp.abs(ev))
        inv = jnp.where(ev > cut, 1.0 / jnp.where(ev > cut, ev, 1.0), 0.0)
        z = Q @ (inv * (Q.T @ (rhs * km)))
        Z = _sym(z.reshape(k, k))
        candidates.append(project_psd(V @ Z @ V.T) * mmf.reshape(k, k))
    cand = jnp.stack(candidates)
    resid = jax.vmap(natural_residual)(cand)
    best = jnp.argmin(jnp.where(jnp.isfinite(resid), resid, jnp.inf))
    Y = cand[best]
    res = jnp.minimum(res, resid[best] / (scale + jnp.linalg.norm(Y)))
    X = _sym(Y * dd.reshape(k, k))

    slack = A + apply_op(Bm, X)

    def min_eig_active(M):
        # Inactive rows/columns are zero; lift them above the active spectrum.
        lift = jnp.where(mask, 0.0, 1.0 + jnp.max(jnp.abs(M)))
        return jnp.linalg.eigvalsh(M + jnp.diag(lift))[0]

    info = ConeQPInfo(iters=iters, residual=res, min_eig_x=min_eig_active(X),
                      min_eig_slack=min_eig_active(slack), complementarity=jnp.vdot(X, slack))
    return X, info
