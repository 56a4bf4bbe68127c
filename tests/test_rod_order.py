"""The order of Rod Flow: one unit of flow time against one step of GD's rod map.

Family of problems scaled by `eps`: two curvatures near the edge of stability
(`lr * lambda_{1,2} = 2 + a eps, 2 - b eps`), the others `O(eps / lr)`, a rod direction in the
span of the top two eigenvectors and `eps` away from the first, a centre orthogonal to both, and
(quartic) an isotropic quartic term of strength `eps`. Every increment of the polar rod map is
then `O(eps)`, and a flow whose time-1 map agrees with the rod map to order `p` misses it by
`O(eps^(p+1))`: slope 2 on a log-log plot for the paper's Rod Flow (`order=1`), slope 3 for
`order=2`.

(Why the direction stays in the critical span: along an eigenvector with `lr * lambda` far below
2, one step of the map multiplies the rod's component by `(1 - lr lambda) / (1 - lr lambda_1)`,
close to -1: that component flips sign every step, and the flow models its two-step mean, which
decays. The map is near the identity, and "order" has a meaning, only in the critical span.)
"""

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rodflow  # noqa: E402
from rodflow.flows import FlowArgs, RodFlow  # noqa: E402
from rodflow.flows._rod import RodState, rod_map  # noqa: E402

LR = 0.1
N = 6
EPSS = (0.08, 0.04, 0.02, 0.01)


def _problem(eps, quartic):
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(N, N)))
    lam = np.concatenate([[2.0 + 0.7 * eps, 2.0 - 0.4 * eps], eps * np.linspace(0.5, 1.5, N - 2)]) / LR
    H = jnp.asarray(Q @ np.diag(lam) @ Q.T)
    beta = eps * 0.3 / LR if quartic else 0.0

    def loss(x):
        return 0.5 * x @ H @ x + 0.25 * beta * (x @ x) ** 2

    c = Q @ np.concatenate([[0.0, 0.0], rng.normal(size=N - 2)]) * 0.5
    v = Q @ np.concatenate([[1.0, 0.8 * eps], np.zeros(N - 2)])
    v = v / np.linalg.norm(v)
    return rodflow.Problem(loss, jnp.zeros(N)), jnp.asarray(c), jnp.asarray(v)


def _polar(c, r, v_ref):
    rho = jnp.linalg.norm(r)
    v = r / rho
    return RodState(c, jnp.log(rho), v * jnp.sign(jnp.vdot(v, v_ref)), None)


def _errors(flow, quartic):
    out = []
    for eps in EPSS:
        problem, c, v = _problem(eps, quartic)
        args = FlowArgs(problem, jnp.asarray(LR))
        rho = 0.05 if quartic else 0.3
        y0 = RodState(c, jnp.log(jnp.asarray(rho)), v, None)
        target = _polar(*rod_map(args.delta, c, rho * v), v)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(flow.vector_field), flow.solver, t0=0.0, t1=1.0, dt0=flow.dt, y0=y0,
            args=args, stepsize_controller=flow.stepsize_controller(), max_steps=4096)
        y1 = jax.tree.map(lambda a: a[-1], sol.ys)
        v1 = y1.direction / jnp.linalg.norm(y1.direction)
        out.append([float(jnp.linalg.norm(y1.centre - target.centre)),
                    float(jnp.abs(y1.log_rho - target.log_rho)),
                    float(jnp.linalg.norm(v1 - target.direction))])
    return np.array(out)  # (eps, [centre, log rho, direction])


def _slope(errs):
    return np.polyfit(np.log(EPSS), np.log(errs), 1)[0]  # one slope per column


ACCURATE = dict(solver=diffrax.Tsit5(), dt=0.05, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("quartic", [pytest.param(False, marks=pytest.mark.slow), True],
                         ids=["quadratic", "quartic"])
def test_time_one_map_order(quartic):
    # the ODEs themselves (integrated to 1e-12): slope 2 and 3
    s1 = _slope(_errors(RodFlow(eps_floor=0.0, **ACCURATE), quartic))
    s2 = _slope(_errors(RodFlow(order=2, eps_floor=0.0, **ACCURATE), quartic))
    print("slopes (centre, log rho, direction): order 1", s1.round(3), "order 2", s2.round(3))
    assert np.all((1.8 < s1[:2]) & (s1[:2] < 2.2)), s1
    assert np.all(s2[:2] > 2.8), s2  # (on the quadratic, log rho's growth law is exact: slope ~5)


@pytest.mark.parametrize("quartic", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["quadratic", "quartic"])
def test_fixed_step_solvers_keep_the_order(quartic):
    # order 1 with its default Euler dt 0.5, order 2 with Heun dt 1 (third-order local error):
    # the same slopes as the accurately integrated ODEs
    s1 = _slope(_errors(RodFlow(eps_floor=0.0), quartic))
    s2 = _slope(_errors(RodFlow(order=2, solver=diffrax.Heun(), dt=1.0, eps_floor=0.0), quartic))
    print("slopes (centre, log rho, direction): order 1", s1.round(3), "order 2", s2.round(3))
    assert np.all((1.8 < s1[:2]) & (s1[:2] < 2.2)), s1
    assert np.all(s2[:2] > 2.8), s2


def test_order_two_defaults_and_cost():
    f = RodFlow(order=2)
    assert isinstance(f.solver, diffrax.Tsit5) and f.rtol == 1e-6 and f.atol == 1e-9
    g = RodFlow(order=2, solver=diffrax.Heun(), dt=1.0)
    assert g.rtol is None and g.dt == 1.0  # a given solver keeps fixed steps
    assert f.cost_per_rhs()["grads"] == 2 * RodFlow().cost_per_rhs()["grads"]
    # (under the test suite's jaxtyping hook the annotation rejects it first: a TypeError)
    with pytest.raises((ValueError, TypeError)):
        RodFlow(order=3)
