"""Central Flow (Cohen, Damian et al., arXiv:2410.24206) and its cone QP."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rodflow.flows._cone_qp import apply_op, solve_cone_qp  # noqa: E402


# ---------------------------------------------------------------------------------------------
# cone QP
# ---------------------------------------------------------------------------------------------
def _random_problem(rng, k, spread=0.5):
    """Indefinite symmetric A and a psd Gram operator B on symmetric k x k matrices."""
    m = k * k + 2
    J = rng.normal(size=(m, k, k))
    J = 0.5 * (J + J.transpose(0, 2, 1)).reshape(m, -1) * np.exp(spread * rng.normal(size=(m, 1)))
    A = rng.normal(size=(k, k))
    return jnp.asarray(A + A.T), jnp.asarray(J.T @ J)


def _check_kkt(A, B, X, mask=None, tol=1e-7):
    S = A + apply_op(B, X)
    if mask is not None:
        idx = np.flatnonzero(np.asarray(mask))
        X, S = X[np.ix_(idx, idx)], S[np.ix_(idx, idx)]
    scale = float(jnp.linalg.norm(A) + jnp.linalg.norm(B) * jnp.linalg.norm(X))
    assert float(jnp.linalg.eigvalsh(X)[0]) >= -tol * scale
    assert float(jnp.linalg.eigvalsh(S)[0]) >= -tol * scale
    assert abs(float(jnp.vdot(X, S))) <= tol * scale * (1.0 + float(jnp.linalg.norm(X)))


def test_cone_qp_scalar_closed_form():
    a = jnp.array([-2.0, 1.5, -0.3, 0.0, 4.0])
    b = jnp.array([0.5, 2.0, 3.0, 1.0, 1e-3])
    X, info = jax.jit(jax.vmap(lambda a, b: solve_cone_qp(a.reshape(1, 1), b.reshape(1, 1))))(a, b)
    np.testing.assert_allclose(X[:, 0, 0], jnp.maximum(0.0, -a / b), rtol=1e-12, atol=1e-15)
    assert int(jnp.max(info.iters)) <= 2


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_cone_qp_complementarity(k):
    rng = np.random.default_rng(k)
    solve = jax.jit(solve_cone_qp)
    for _ in range(6):
        A, B = _random_problem(rng, k)
        X, info = solve(A, B)
        _check_kkt(A, B, X)
        np.testing.assert_allclose(X, X.T)


def test_cone_qp_mask_matches_subproblem():
    rng = np.random.default_rng(7)
    A, B = _random_problem(rng, 4)
    mask = jnp.array([True, False, True, False])
    X, _ = jax.jit(solve_cone_qp)(A, B, mask)
    idx = np.array([0, 2])
    sub = np.ix_(idx, idx)
    B4 = np.asarray(B).reshape(4, 4, 4, 4)
    Bsub = jnp.asarray(B4[np.ix_(idx, idx, idx, idx)].reshape(4, 4))
    Xs, _ = jax.jit(solve_cone_qp)(A[sub], Bsub)
    np.testing.assert_allclose(X[sub], Xs, atol=1e-9)
    assert float(jnp.abs(X[1]).max() + jnp.abs(X[:, 3]).max()) == 0.0
    _check_kkt(A, B, X, mask)
