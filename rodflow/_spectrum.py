"""Top Hessian eigenpairs from Hessian-vector products.

[`top_eigenpairs`][rodflow.top_eigenpairs] returns the `k` algebraically largest eigenvalues of
the Hessian of a scalar function and their eigenvectors; its docstring lists the methods.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.experimental.sparse.linalg import lobpcg_standard
from jaxtyping import Array, Float

from ._derivatives import hvp
from ._lax import branch

DENSE_MAX = 256
METHODS = ("auto", "lobpcg", "power", "krylov", "dense")


def initial_vectors(n: int, k: int, dtype, seed: int = 0) -> Float[Array, "n k"]:
    """A fixed random starting block for the eigensolvers."""
    u = jr.normal(jr.PRNGKey(seed), (n, k), dtype=dtype)
    return u / jnp.linalg.norm(u, axis=0, keepdims=True)


def resolve_method(method: str, n: int, k: int, max_iters: int | None = None) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown eigensolver method {method!r}; choose one of {METHODS}.")
    if k < 1:
        raise ValueError(f"the number of eigenpairs `k` must be >= 1, got {k}.")
    if method == "auto":
        return "dense" if (n <= DENSE_MAX or 5 * k >= n) else "lobpcg"
    if method == "lobpcg" and 5 * k >= n:
        raise ValueError(f"LOBPCG needs 5k < n (got k={k}, n={n}); use method='dense'.")
    if method == "krylov" and max_iters is not None:
        if max_iters < 1:
            raise ValueError(f"the Krylov estimator needs at least 1 block (eig_iters >= 1), "
                             f"got {max_iters}.")
        if max_iters * k > n:
            raise ValueError(f"the Krylov space of {max_iters} blocks of {k} vectors is larger than the "
                             f"{n} parameters; lower the iterations (eig_iters) or use method='dense'.")
    return method


def _sorted_desc(vals, vecs):
    order = jnp.argsort(-vals)
    return vals[order], vecs[:, order]


def _power(matvec, U0, iters):
    def body(_, U):
        Q, _ = jnp.linalg.qr(matvec(U))
        return Q

    U = jax.lax.fori_loop(0, iters, body, jnp.linalg.qr(U0)[0])
    T = U.T @ matvec(U)
    w, S = jnp.linalg.eigh(0.5 * (T + T.T))
    return _sorted_desc(w, U @ S)


def _krylov(matvec, U0, blocks):
    """Rayleigh-Ritz on `span(U0, H U0, ..., H^(blocks-1) U0)`: `blocks * k` products with `H`.

    Each new block is the last block's image made orthogonal to the basis so far by a
    Householder QR of `[basis, image]`, whose `Q` is orthonormal even when the image lies in
    the basis's span (an invariant subspace: the extra directions are then arbitrary and
    harmless). With one block the Ritz vectors span `U0` itself and would never improve, so
    the vectors returned are their images `H U0 S` made orthonormal (one power step, from the
    products already taken): the next measurement starts from them."""
    k = U0.shape[1]
    V = jnp.linalg.qr(U0)[0]
    HV = matvec(V)
    for _ in range(blocks - 1):
        new = jnp.linalg.qr(jnp.concatenate([V, HV[:, -k:]], axis=1))[0][:, -k:]
        V, HV = jnp.concatenate([V, new], axis=1), jnp.concatenate([HV, matvec(new)], axis=1)
    T = V.T @ HV
    w, S = jnp.linalg.eigh(0.5 * (T + T.T))
    S = S[:, ::-1][:, :k]
    return w[::-1][:k], (jnp.linalg.qr(HV @ S)[0] if blocks == 1 else V @ S)


def top_eigenpairs(
    f: Callable[[Float[Array, " n"]], Array],
    x: Float[Array, " n"],
    U0: Float[Array, "n k"],
    *,
    method: str = "auto",
    max_iters: int = 40,
    rtol: float = 1e-4,
) -> tuple[Float[Array, " k"], Float[Array, "n k"]]:
    """Top-`k` eigenpairs of `hess f(x)`, `k = U0.shape[1]`, warm-started from `U0`.

    **Arguments:**

    - `f`: scalar function of a flat vector.
    - `x`: where to take the Hessian.
    - `U0`: `(n, k)` starting vectors (the previous call's eigenvectors make a warm start).
    - `method`: `"auto"`, `"lobpcg"`, `"power"`, `"krylov"` or `"dense"` (below).
    - `max_iters`: iteration cap for LOBPCG and power iteration; for `"krylov"`, the number of
      blocks `m` of the Krylov space (`m k <= n`), each `k` Hessian-vector products.
    - `rtol`: relative residual tolerance for LOBPCG.

    **Returns:** `(eigenvalues (k,) descending, eigenvectors (n, k))`.

    **Methods:**

    - `"lobpcg"`: `jax.experimental.sparse.linalg.lobpcg_standard`, warm-started from the previous
      eigenvectors (pass them back in as `U0`); a few iterations per call once warm. Needs `5k < n`.
      If it returns a non-finite value, block power iteration is used instead (fallback).
    - `"power"`: block power (subspace) iteration with a Rayleigh-Ritz step. It converges to the
      eigenvalues of largest *magnitude*: fine for the positive top of a loss Hessian, wrong if a
      negative eigenvalue is larger in magnitude.
    - `"krylov"`: Rayleigh-Ritz on the block Krylov space `span(U0, H U0, ..., H^(m-1) U0)`,
      `m = max_iters`, warm-started like LOBPCG: a fixed cost of `m k` Hessian-vector products and no
      convergence test, so no data-dependent loop (on a GPU, no round trip to the host). From one
      measurement to the next the starting block is the previous Ritz vectors, so a run refines
      them like a restarted block Lanczos method. With `m = 1` (`k` products) the eigenvalues are
      the Rayleigh-Ritz values of `U0` alone and the vectors returned are not their Ritz vectors
      but the next power-iteration block, orthonormalised `H U0`: over a run the measurements
      then carry on one block power iteration, one step per measurement, and each value lags
      the vectors by that step; like `"power"` it converges to the eigenvalues of largest
      *magnitude* (`m >= 2` refines towards the algebraically largest). Meant for `m` of 1 to
      8; the error this leaves along a GD run is measured in
      `benchmarks/sharpness_estimators.py`. The runs ([`rodflow.compare`][], [`rodflow.sweep`][])
      start it from a block converged by `"auto"` at the start (a random `U0` leaves the first
      measurements far off).
    - `"dense"`: the full Hessian and `jnp.linalg.eigh`; exact, for small problems (toys).
    - `"auto"`: dense when `n <= 256` (or when `5k >= n`), LOBPCG otherwise.
    """
    n, k = U0.shape
    method = resolve_method(method, n, k, max_iters)
    if method == "dense":
        H = jax.hessian(f)(x)
        w, V = jnp.linalg.eigh(0.5 * (H + H.T))
        return w[::-1][:k], V[:, ::-1][:, :k]

    matvec = jax.vmap(lambda u: hvp(f, x, u), in_axes=1, out_axes=1)
    if method == "power":
        return _power(matvec, U0, max_iters)
    if method == "krylov":
        return _krylov(matvec, U0, max_iters)
    # lobpcg's convergence test is |Av - lambda v| < tol * 10 n (|lambda| + |Av|).
    tol = rtol / (10.0 * n)
    U0 = jnp.where(jnp.all(jnp.isfinite(U0)), U0, initial_vectors(n, k, U0.dtype))
    theta, U, _ = lobpcg_standard(matvec, U0, m=max_iters, tol=tol)
    theta, U = _sorted_desc(theta, U)
    # Fall back to power iteration if LOBPCG broke down (but not when x itself is non-finite).
    ok = jnp.all(jnp.isfinite(theta)) | ~jnp.all(jnp.isfinite(x))
    return branch(ok, lambda: (theta, U), lambda: _power(matvec, initial_vectors(n, k, U0.dtype), max_iters))
