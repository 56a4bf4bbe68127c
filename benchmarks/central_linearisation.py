"""Central Flow for RMSProp: its linearisation of `d/dt M`, `M = U^T D H D U`, against finite
differences along the flow's own vector field.

    python benchmarks/central_linearisation.py [--out benchmarks/results/central_linearisation.json]

At a generic point of mlp-teacher (float64; `x0` plus a small random offset, `nu = g^2 + 1e-6`,
or its mean for scalar RMSProp, count 10.5, lr 1e-3) with the top two eigenvectors `U` of
`D H D` (LOBPCG, 200 iterations) and a fixed psd `X`, the flow moves `w` by
`-lr P^-1 (g + 1/2 grad <Sigma, H>)` and `nu` by `(1 - beta2)(g^2 + diag(H Sigma H) - nu)`. The cone
problem of `CentralFlow` uses `dM/dt = -lr (A_g + A_nu + B[X])`; this script compares that (built
from the flow's own helpers) with a central finite difference of `M` along the same motion
(`U` fixed). The `X = 0` part (`A_g + A_nu`) is exact; `B_nu` takes the eigenvalue factor
`(lambda_i + lambda_j)/2 lambda_k lambda_l` as `(lambda_i lambda_j)^(3/4) (lambda_k lambda_l)^(3/4)`,
exact when the tracked eigenvalues are equal (at the threshold), approximate here where they
differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import rodflow  # noqa: E402
from rodflow._io import write_json  # noqa: E402
from rodflow._maps import preconditioned_eigenpairs  # noqa: E402
from rodflow._spectrum import initial_vectors  # noqa: E402
from rodflow.flows._central import _hd, _nu_operator, _scale  # noqa: E402


def check(opt, problem, lr=1e-3, k=2, h=1e-3):
    f = problem.loss_flat
    w = problem.x0 + 0.05 * jax.random.normal(jax.random.PRNGKey(0), problem.x0.shape)
    p = w.shape[0]
    g = jax.grad(f)(w)
    nu = jnp.mean(g * g, keepdims=True) if opt.scalar else g * g + 1e-6
    count = jnp.asarray(10.5)
    D = _scale(opt, nu, count) * jnp.ones_like(w)
    U0 = initial_vectors(p, k, w.dtype)
    vals, U = preconditioned_eigenpairs(f, w, D, U0, method="lobpcg", max_iters=200)
    X = jnp.array([[1.0, 0.3], [0.3, 0.5]]) * 1e-4
    iu, ju = np.triu_indices(k)
    pair = np.zeros((k, k), np.int32)
    pair[iu, ju] = np.arange(len(iu))
    pair[ju, iu] = np.arange(len(iu))
    pair = pair.reshape(-1)
    Gp = jax.vmap(lambda i, j: jax.grad(lambda x: jnp.vdot(U[:, i], _hd(f, x, U[:, j], D)))(w))(
        jnp.asarray(iu), jnp.asarray(ju))
    AU = jax.vmap(lambda u: _hd(f, w, u, D), in_axes=1, out_axes=1)(U)
    Y = AU / D[:, None]

    def motion(X):
        dw = -lr * D * D * (g + 0.5 * (X.reshape(-1) @ Gp[pair]))
        dnu = opt.nu_drive(g * g + jnp.sum((Y @ X) * Y, axis=1), nu)
        return dw, dnu

    def M(wv, nuv, c):
        Dv = _scale(opt, nuv, c) * jnp.ones_like(w)
        return U.T @ jax.vmap(lambda u: _hd(f, wv, u, Dv), in_axes=1, out_axes=1)(U)

    def fd(X):
        dw, dnu = motion(X)
        return (M(w + h * dw, nu + h * dnu, count + h) - M(w - h * dw, nu - h * dnu, count - h)) / (2 * h)

    Ag = U.T @ jax.vmap(lambda u: jax.jvp(lambda x: _hd(f, x, u, D), (w,), (D * D * g,))[1],
                        in_axes=1, out_axes=1)(U)
    Ag = 0.5 * (Ag + Ag.T)
    dD0 = jax.jvp(lambda n, c: _scale(opt, n, c), (nu, count),
                  (opt.nu_drive(g * g, nu), jnp.ones_like(count)))[1] * jnp.ones_like(w)
    An = U.T @ ((dD0 / D)[:, None] * AU)
    An = -(An + An.T) / lr
    B = 0.5 * ((Gp * (D * D)) @ Gp.T)[pair][:, pair] + _nu_operator(opt, U, D, nu, count, vals) / lr
    BX = (B @ X.reshape(-1)).reshape(k, k)
    model0, model = -lr * (Ag + An), -lr * (Ag + An + 0.5 * (BX + BX.T))
    fd0, fdX = fd(jnp.zeros_like(X)), fd(X)

    def rel(a, b):
        return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))

    return {"eigenvalues": np.asarray(vals).tolist(), "lr_eigenvalues": (lr * np.asarray(vals)).tolist(),
            "X": np.asarray(X).tolist(),
            "dMdt_X0": {"finite_difference": np.asarray(fd0).tolist(), "model": np.asarray(model0).tolist(),
                        "rel_error": rel(model0, fd0)},
            "dMdt_X": {"finite_difference": np.asarray(fdX).tolist(), "model": np.asarray(model).tolist(),
                       "rel_error": rel(model, fdX)}}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/central_linearisation.json"))
    args = ap.parse_args(argv)
    problem = rodflow.problems.get("mlp-teacher")
    out = {"command": "python " + " ".join(sys.argv), "problem": "mlp-teacher", "dtype": "float64",
           "jax": jax.__version__, "runs": {}}
    for opt in (rodflow.RMSProp(), rodflow.ScalarRMSProp()):
        out["runs"][opt.name] = r = check(opt, problem)
        print(f"{opt.name}: eigenvalues {r['eigenvalues']}, rel error X=0 {r['dMdt_X0']['rel_error']:.2e}, "
              f"with X {r['dMdt_X']['rel_error']:.2e}")
    write_json(args.out, out)


if __name__ == "__main__":
    main()
