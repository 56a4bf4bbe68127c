"""Sharpness from Hessian-vector products against dense eigh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rodflow
from rodflow._derivatives import hvp, rod_curvature_grad
from rodflow._spectrum import initial_vectors, top_eigenpairs


@pytest.fixture(scope="module")
def mlp():
    p = rodflow.problems.get("mlp-digits", n=60, width=12, depth=2, seed=1)
    # move away from the initialisation so the spectrum is not degenerate
    x = p.x0 - 0.5 * jax.grad(p.loss_flat)(p.x0)
    H = jax.hessian(p.loss_flat)(x)
    return p, x, np.linalg.eigvalsh(np.asarray(H))[::-1]


def test_hvp_matches_dense_hessian(mlp):
    p, x, _ = mlp
    v = jax.random.normal(jax.random.PRNGKey(0), x.shape)
    H = jax.hessian(p.loss_flat)(x)
    np.testing.assert_allclose(hvp(p.loss_flat, x, v), H @ v, rtol=1e-10, atol=1e-12)


def test_rod_curvature_grad_matches_finite_differences(mlp):
    p, x, _ = mlp
    v = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    v = v / jnp.linalg.norm(v)
    u = jax.random.normal(jax.random.PRNGKey(2), x.shape)
    kappa = lambda y: jnp.vdot(v, hvp(p.loss_flat, y, v))
    h = 1e-5
    fd = (kappa(x + h * u) - kappa(x - h * u)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(rod_curvature_grad(p.loss_flat, x, v), u), fd, rtol=1e-6)


@pytest.mark.parametrize("method,k", [("lobpcg", 1), ("lobpcg", 3), ("power", 2), ("dense", 3)])
def test_top_eigenpairs_match_eigh(mlp, method, k):
    p, x, eigs = mlp
    U0 = initial_vectors(x.shape[0], k, x.dtype)
    vals, U = jax.jit(lambda x, U: top_eigenpairs(p.loss_flat, x, U, method=method,
                                                  max_iters=300 if method == "power" else 100))(x, U0)
    np.testing.assert_allclose(vals, eigs[:k], rtol=1e-4 if method == "power" else 1e-6)
    # eigenvector residuals
    for i in range(k):
        r = hvp(p.loss_flat, x, U[:, i]) - vals[i] * U[:, i]
        assert float(jnp.linalg.norm(r)) < 1e-2 * abs(float(vals[i]))


def test_warm_start_converges_in_few_iterations(mlp):
    p, x, eigs = mlp
    U0 = initial_vectors(x.shape[0], 1, x.dtype)
    cold, U = top_eigenpairs(p.loss_flat, x, U0, method="lobpcg", max_iters=200)
    vals, _ = top_eigenpairs(p.loss_flat, x, U, method="lobpcg", max_iters=3)
    # LOBPCG stops once the residual |Hv - lam v| < rtol (|lam| + |Hv|) ~ 2 rtol lam (rtol 1e-4,
    # the default); a Rayleigh quotient is then off by at most |residual|^2 / gap.
    bound = (2e-4 * eigs[0]) ** 2 / (eigs[0] - eigs[1])
    assert abs(float(cold[0]) - eigs[0]) <= bound
    assert abs(float(vals[0]) - eigs[0]) <= bound  # 3 warm-started iterations are as good


@pytest.mark.parametrize("k", [1, 2])
def test_krylov_is_rayleigh_ritz_on_the_krylov_space(mlp, k):
    """`method="krylov"` with m blocks returns the top Ritz values of span(U0, H U0, ...,
    H^(m-1) U0), built here independently from the dense Hessian; restarted from its own
    vectors (as a run does, one measurement to the next) it converges to the top eigenpairs."""
    p, x, eigs = mlp
    H = np.asarray(jax.hessian(p.loss_flat)(x))
    U0 = initial_vectors(x.shape[0], k, x.dtype)
    m = 4
    basis = [np.asarray(U0)]
    for _ in range(m - 1):
        basis.append(H @ basis[-1])
    Q = np.linalg.qr(np.concatenate(basis, axis=1))[0]
    ritz = np.linalg.eigvalsh(Q.T @ H @ Q)[::-1][:k]
    top = jax.jit(lambda x, U, m: top_eigenpairs(p.loss_flat, x, U, method="krylov", max_iters=m),
                  static_argnums=2)
    vals, U = top(x, U0, m)
    np.testing.assert_allclose(vals, ritz, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(U).T @ np.asarray(U), np.eye(k), atol=1e-10)
    assert np.all(np.asarray(vals) <= eigs[:k] * (1 + 1e-12))  # Ritz values bound from below
    errors = []
    for _ in range(30):
        vals, U = top(x, U, m)
        errors.append(float(np.max(np.abs(np.asarray(vals) - eigs[:k]) / eigs[:k])))
    assert errors[-1] < 1e-8 and errors[-1] <= errors[0]
    r = hvp(p.loss_flat, x, U[:, 0]) - vals[0] * U[:, 0]
    assert float(jnp.linalg.norm(r)) < 1e-3 * abs(float(vals[0]))


def test_krylov_from_an_eigenvector_and_too_many_blocks(mlp):
    p, x, eigs = mlp
    H = np.asarray(jax.hessian(p.loss_flat)(x))
    w, E = np.linalg.eigh(H)
    vals, U = top_eigenpairs(p.loss_flat, x, jnp.asarray(E[:, -1:]), method="krylov", max_iters=3)
    np.testing.assert_allclose(vals, eigs[:1], rtol=1e-10)  # an invariant start stays exact
    assert np.all(np.isfinite(np.asarray(U)))
    n = x.shape[0]
    with pytest.raises(ValueError, match="eig_iters"):
        top_eigenpairs(p.loss_flat, x, initial_vectors(n, 2, x.dtype), method="krylov", max_iters=n // 2 + 1)
    with pytest.raises(ValueError, match="at least 1 block"):
        top_eigenpairs(p.loss_flat, x, initial_vectors(n, 1, x.dtype), method="krylov", max_iters=0)


@pytest.mark.parametrize("k", [1, 2])
def test_one_block_krylov_is_a_rayleigh_quotient_and_a_power_step(mlp, k):
    """With one block (`k` products) the values are the Rayleigh-Ritz values of `U0` and the
    vectors handed on are `H U0` (on the Ritz basis) made orthonormal, one step of block power
    iteration: restarted from its own vectors it converges to the top eigenpairs, from below."""
    p, x, eigs = mlp
    H = np.asarray(jax.hessian(p.loss_flat)(x))
    U0 = initial_vectors(x.shape[0], k, x.dtype)
    Q = np.linalg.qr(np.asarray(U0))[0]
    ritz, S = np.linalg.eigh(Q.T @ H @ Q)
    top = jax.jit(lambda x, U: top_eigenpairs(p.loss_flat, x, U, method="krylov", max_iters=1))
    vals, U = top(x, U0)
    np.testing.assert_allclose(vals, ritz[::-1], rtol=1e-8)
    U = np.asarray(U)
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-10)
    power = np.linalg.qr(H @ Q @ S[:, ::-1])[0]  # the same span, and column by column up to sign
    np.testing.assert_allclose(np.abs(np.sum(U * power, axis=0)), 1.0, rtol=1e-8)
    errors = []
    for _ in range(300):
        vals, U = top(x, U)
        assert np.all(np.asarray(vals) <= eigs[:k] * (1 + 1e-12))
        errors.append(float(np.max(np.abs(np.asarray(vals) - eigs[:k]) / eigs[:k])))
    assert errors[-1] < 1e-6 and errors[-1] <= errors[0]


def test_bad_method_and_k():
    p = rodflow.problems.get("quadratic")
    with pytest.raises(ValueError, match="eigensolver method"):
        top_eigenpairs(p.loss_flat, p.x0, jnp.ones((3, 1)), method="magic")
    with pytest.raises(ValueError, match="5k < n"):
        top_eigenpairs(p.loss_flat, p.x0, jnp.ones((3, 1)), method="lobpcg")


def test_lobpcg_breakdown_falls_back_to_power_iteration_per_lane(monkeypatch):
    """Where LOBPCG returns a non-finite eigenvalue, `top_eigenpairs` returns block power
    iteration's answer instead; in a grid (the engine's named axis) only that lane does."""
    import rodflow._spectrum as spectrum
    from rodflow._chunks import over_grid

    A = jnp.diag(jnp.linspace(1.0, 3.0, 40))
    f = lambda x: 0.5 * x @ A @ x  # noqa: E731
    real = spectrum.lobpcg_standard

    def breaks_down_for_negative_starts(matvec, U0, m, tol):
        theta, U, its = real(matvec, U0, m=m, tol=tol)
        return jnp.where(U0[0, 0] < 0, jnp.nan, theta), U, its

    monkeypatch.setattr(spectrum, "lobpcg_standard", breaks_down_for_negative_starts)
    x = jnp.ones(40)
    U0 = initial_vectors(40, 1, x.dtype)
    U0 = U0 * jnp.sign(U0[0, 0])  # a start whose first entry is positive: LOBPCG stands
    power = spectrum._power(jax.vmap(lambda u: hvp(f, x, u), in_axes=1, out_axes=1),
                            initial_vectors(40, 1, x.dtype), 40)[0]

    def top(U):
        return top_eigenpairs(f, x, U, method="lobpcg", max_iters=40)[0]

    np.testing.assert_allclose(top(U0), 3.0, rtol=1e-6)  # LOBPCG converged
    np.testing.assert_allclose(top(-U0), power, rtol=1e-12)  # broke down: power iteration
    assert abs(float(power[0]) - 3.0) > 1e-9  # (so the two answers are distinguishable)
    lanes = np.asarray(jax.jit(lambda Us: over_grid(top, Us))(jnp.stack([U0, -U0, U0])))
    np.testing.assert_allclose(lanes[[0, 2]], 3.0, rtol=1e-6)
    np.testing.assert_allclose(lanes[1], power, rtol=1e-12)


def test_discrete_run_with_the_krylov_estimator_tracks_the_default_sharpness():
    """A run with `eig_method="krylov"` at its default 8 blocks measures the same sharpness
    series as the default LOBPCG run, in a sweep of two step sizes, for the discrete run and
    for a flow, from the first measurement on: the estimator starts from vectors converged by
    the default eigensolver (from the random block, 3-4 blocks were off by 20-35% at first)."""
    p = rodflow.problems.get("mlp-digits", n=200, width=16, depth=2, seed=1)
    kw = dict(steps=300, flows=("discrete", "stable"), figure=False)
    # both start above the threshold (sharpness 25.8: GD catapults, its top eigenvector turns
    # within the first 10 steps); lr 0.1 then sits at EoS, lr 0.2 sharpens back to it
    ref = rodflow.sweep(p, lrs=[0.1, 0.2], **kw)
    est = rodflow.sweep(p, lrs=[0.1, 0.2], eig_method="krylov", **kw)
    assert est.runs[0].metrics["eigensolver"] == {"method": "krylov", "resolved": "krylov", "iters": 8,
                                                  "top_k": 1}
    assert ref.runs[0].metrics["eigensolver"] == {"method": "auto", "resolved": "lobpcg", "iters": 40,
                                                  "top_k": 1}
    for i in range(2):
        for run in ("discrete", "stable"):
            a = np.asarray(ref.runs[i].series[run]["sharpness"], float)
            b = np.asarray(est.runs[i].series[run]["sharpness"], float)
            rel = np.abs(b - a) / a
            # Ritz values never exceed the top eigenvalue (LOBPCG's is accurate to about 1e-6)
            assert np.all(b <= a * (1 + 1e-5))
            assert rel[0] < 1e-4, (i, run, rel[:3])
            assert np.median(rel) < 1e-4 and rel.max() < 0.02, (i, run, np.median(rel), rel.max())


def test_eig_iters_default_follows_the_method():
    """`eig_iters` left out: 40 iterations for LOBPCG (the recorded settings key unchanged), 8
    blocks for the Krylov estimator; a new method without `eig_iters` takes its own default, an
    explicit value is kept."""
    s = rodflow.Settings(steps=10)
    assert s.eig_iters == 40 and s.key(0)["eig"] == [1, "auto", 40]
    assert rodflow.Settings(steps=10, eig_method="krylov").eig_iters == 8
    assert rodflow.Settings(steps=10, eig_method="krylov", eig_iters=3).eig_iters == 3
    assert rodflow.Settings.from_options(s, {"eig_method": "krylov"}).eig_iters == 8
    assert rodflow.Settings.from_options(s, {"eig_method": "krylov", "eig_iters": 2}).eig_iters == 2
    k = rodflow.Settings(steps=10, eig_method="krylov")
    assert rodflow.Settings.from_options(k, {"eig_method": "lobpcg"}).eig_iters == 40
    assert rodflow.Settings.from_options(k, {"steps": 20}).eig_iters == 8
    # an explicit value stays: with the same method, and with another one
    k4 = rodflow.Settings(steps=10, eig_method="krylov", eig_iters=4)
    assert rodflow.Settings.from_options(k4, {"eig_method": "krylov"}).eig_iters == 4
    assert rodflow.Settings.from_options(k4, {"eig_method": "lobpcg"}).eig_iters == 4


def test_krylov_cold_start_of_a_warm_started_flow():
    """A flow warm-started at step 50 takes its converged block at its own start (time 50): its
    first measurement agrees with the default eigensolver's."""
    p = rodflow.problems.get("mlp-digits", n=200, width=16, depth=2, seed=1)
    kw = dict(lr=0.1, steps=100, flows=("discrete", "stable"), start_step=50, figure=False)
    ref = np.asarray(rodflow.compare(p, **kw).series["stable"]["sharpness"], float)
    est = np.asarray(rodflow.compare(p, eig_method="krylov", **kw).series["stable"]["sharpness"], float)
    assert np.all(np.isnan(ref[:5])) and np.all(np.isnan(est[:5]))  # the flow starts at step 50
    rel = np.abs(est[5:] - ref[5:]) / ref[5:]
    assert rel[0] < 1e-4 and rel.max() < 1e-2, rel
