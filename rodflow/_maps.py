"""One-step maps `F(z) = z + delta(z)` of the discrete optimiser.

GD is `optax.sgd(lr)`: `F(x) = x - lr * g(x)`, on `z = x`. An optimiser with state (heavy ball,
Nesterov, RMSProp, Adam, NAdam, ...) is a map on the joint vector
`z = (flat params, flat float optimiser state)`; every flow is built from `delta` on `z`, so
adding an optimiser means adding one map. The rod flows only need `delta` (and its derivatives).

**Layout of z** ([`OptaxMap`][]): the flat parameters first, then the floating-point leaves of
the optax state in tree order, except that leaves named `nu` (second moments) come last, so that
a flow can keep them as a smooth variable (`z = (x, mu, ..., nu)`). Integer leaves (Adam's step
`count`) are not part of `z`: they are the map's time.

**Time.** `delta(problem, z, lr, t)`: `t` is the step index `k` of the state `z` (the optimiser's
`count`). Only bias-corrected maps depend on it; `t=None` means count 0 there. A flow at time `t`
models the pair `(z_t, z_{t+1})`, so the flows evaluate the map at `t + 1/2`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._problem import Problem
from ._spectrum import top_eigenpairs


class AbstractMap(eqx.Module):
    """A one-step optimiser map on `z` (`z = x`, the flat parameters, for GD)."""

    name: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def optimizer(self, lr) -> optax.GradientTransformation:
        """The optax optimiser that the `discrete` run executes."""

    @abc.abstractmethod
    def delta(self, problem: Problem, z, lr, t=None):
        """`F(z) - z` for one step of size `lr` from the state `z` at step `t`."""

    @abc.abstractmethod
    def threshold(self, lr):
        """Stability threshold on the effective sharpness, e.g. `2 / lr` for GD."""

    # -- the joint state; defaults: z = x -------------------------------------------------------
    def init_state(self, problem: Problem, x0, lr):
        """`z0` for a run started at the parameters `x0`."""
        return x0

    def pack(self, problem: Problem, x, opt_state):
        """`z` from the parameters and the optax state of the discrete run."""
        return x

    def params(self, problem: Problem, z):
        """The parameters `x` of `z` (what is compared with the discrete run's centres)."""
        return z

    def n_smooth(self, problem: Problem) -> int:
        """How many trailing entries of `z` are second moments (`nu`), which a flow may keep as a
        smooth variable without a rod component. 0 for maps without one."""
        return 0

    def sharpness(self, problem: Problem, z, lr, U0, t=None, *, method: str = "auto", max_iters: int = 40):
        """Effective sharpness at `z` (compared with `threshold(lr)`) and the eigenvector warm
        start. Default: top Hessian eigenvalue at `params(z)`."""
        vals, U = top_eigenpairs(problem.loss_flat, self.params(problem, z), U0, method=method,
                                 max_iters=max_iters)
        return vals, U

    def rod_sharpness(self, q, lr):
        """The rod's curvature in threshold units from `q = v . J_delta v`: the rod grows iff
        `-q > 2`, i.e. iff `(-q/2) * threshold(lr) > threshold(lr)`."""
        return -0.5 * q * self.threshold(lr)


class GradientDescent(AbstractMap):
    """Full-batch gradient descent, `x_{k+1} = x_k - lr * grad L(x_k)` (`optax.sgd`), `z = x`.
    Effective sharpness: the top Hessian eigenvalue; threshold `2/lr`."""

    name: ClassVar[str] = "gd"

    def optimizer(self, lr) -> optax.GradientTransformation:
        return optax.sgd(lr)

    def delta(self, problem: Problem, x, lr, t=None):
        return -lr * jax.grad(problem.loss_flat)(x)

    def threshold(self, lr):
        return 2.0 / lr

    def rod_sharpness(self, q, lr):
        return -q / lr


# ---------------------------------------------------------------------------------------------
# optax optimisers on z = (params, float state)
# ---------------------------------------------------------------------------------------------
def _is_nu(path) -> bool:
    return any(getattr(k, "name", None) == "nu" for k in path)


class _Layout(NamedTuple):
    treedef: Any
    paths: list
    shapes: list
    dtypes: list
    float_order: list  # indices of the float leaves in z order (non-nu first, nu last)
    n_nu: int


class OptaxMap(AbstractMap):
    """Any optax optimiser as a map on `z = (flat params, flat float state)`.

    `factory(lr) -> optax.GradientTransformation` builds the optimiser (e.g.
    `lambda lr: optax.sgd(lr, momentum=0.9)`). The discrete run executes it; `delta` runs one of
    its updates on the state unpacked from `z`, with integer leaves (step counts) set to the time
    `t` (as a float, so the map is smooth in time). Without more knowledge the effective sharpness
    is the top Hessian eigenvalue and the threshold `2/lr`; the named subclasses know better.
    """

    name: ClassVar[str] = "optax"
    factory: Callable[[Any], optax.GradientTransformation] = eqx.field(static=True, default=None)

    def optimizer(self, lr):
        return self.factory(lr)

    def threshold(self, lr):
        return 2.0 / lr

    # -- layout ----------------------------------------------------------------------------------
    def _layout(self, problem: Problem) -> _Layout:
        x = jax.ShapeDtypeStruct((problem.dim,), problem.dtype)
        state = jax.eval_shape(self.optimizer(1.0).init, x)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
        paths = [p for p, _ in leaves]
        shapes = [tuple(v.shape) for _, v in leaves]
        dtypes = [v.dtype for _, v in leaves]
        floats = [i for i, d in enumerate(dtypes) if jnp.issubdtype(d, jnp.floating)]
        nu = [i for i in floats if _is_nu(paths[i])]
        rest = [i for i in floats if i not in nu]
        n_nu = int(sum(int(np.prod(shapes[i])) for i in nu))
        return _Layout(treedef, paths, shapes, dtypes, rest + nu, n_nu)

    def n_smooth(self, problem):
        return self._layout(problem).n_nu

    def pack(self, problem, x, opt_state):
        lay = self._layout(problem)
        leaves = jax.tree.leaves(opt_state)
        return jnp.concatenate([x] + [jnp.ravel(leaves[i]).astype(x.dtype) for i in lay.float_order])

    def unpack(self, problem, z, t=None):
        """`(x, optax state)` from `z`; integer leaves become the time `t` (0 if `None`).

        Second moments (`nu` leaves) are clamped below at `sqrt(tiny)` of the dtype (1.5e-154 in float64):
        on true optimiser states this changes nothing measurable (only exact zeros, where the
        gradient has always been 0), but it keeps `sqrt(nu)` differentiable (the rod's
        Jacobian-vector products) and defines the map for rod ends with `nu < 0`."""
        lay = self._layout(problem)
        x = z[: problem.dim]
        leaves: list = [None] * len(lay.shapes)
        off = problem.dim
        for i in lay.float_order:
            n = int(np.prod(lay.shapes[i]))
            leaves[i] = z[off: off + n].reshape(lay.shapes[i]).astype(lay.dtypes[i])
            if _is_nu(lay.paths[i]):  # see below
                leaves[i] = jnp.maximum(leaves[i], jnp.sqrt(jnp.finfo(lay.dtypes[i]).tiny))
            off += n
        for i, d in enumerate(lay.dtypes):
            if leaves[i] is None:
                leaves[i] = (jnp.zeros(lay.shapes[i], d) if t is None
                             else jnp.broadcast_to(jnp.asarray(t, z.dtype), lay.shapes[i]))
        return x, jax.tree_util.tree_unflatten(lay.treedef, leaves)

    def init_state(self, problem, x0, lr):
        return self.pack(problem, x0, self.optimizer(lr).init(x0))

    def params(self, problem, z):
        return z[: problem.dim]

    def delta(self, problem, z, lr, t=None):
        x, state = self.unpack(problem, z, t)
        g = jax.grad(problem.loss_flat)(x)
        updates, new_state = self.optimizer(lr).update(g, state, x)
        new_z = self.pack(problem, x, new_state)
        return jnp.concatenate([updates.astype(z.dtype), new_z[problem.dim:] - z[problem.dim:]])


class HeavyBall(OptaxMap):
    """Heavy ball, `optax.sgd(lr, momentum=beta)`: `m' = g + beta m`, `x' = x - lr m'`;
    `z = (x, m)`. Linear stability on `L = lam x^2/2`: stable iff `lr lam < 2 + 2 beta`, so the
    effective sharpness is the top Hessian eigenvalue and the threshold `(2 + 2 beta)/lr`."""

    name: ClassVar[str] = "heavy-ball"
    beta: float = 0.9
    nesterov: ClassVar[bool] = False

    def optimizer(self, lr):
        return optax.sgd(lr, momentum=self.beta, nesterov=self.nesterov)

    def threshold(self, lr):
        return (2.0 + 2.0 * self.beta) / lr


class Nesterov(HeavyBall):
    """Nesterov momentum, `optax.sgd(lr, momentum=beta, nesterov=True)`:
    `m' = g + beta m`, `x' = x - lr (g + beta m')`. Stable on `L = lam x^2/2` iff
    `lr lam < (2 + 2 beta) / (1 + 2 beta)` (the characteristic polynomial
    `mu^2 - (1 + beta)(1 - a) mu + beta (1 - a)`, `a = lr lam`, has a root at -1 there)."""

    name: ClassVar[str] = "nesterov"
    nesterov: ClassVar[bool] = True

    def threshold(self, lr):
        return (2.0 + 2.0 * self.beta) / ((1.0 + 2.0 * self.beta) * lr)


class MomentsState(NamedTuple):
    count: Any
    mu: Any
    nu: Any


def scale_by_moments(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, bias_correction: bool = True,
                     nesterov: bool = False, scalar: bool = False) -> optax.GradientTransformation:
    """Adam-family scaling on a flat vector (an optax `GradientTransformation`):
    `mu' = b1 mu + (1-b1) g`, `nu' = b2 nu + (1-b2) g^2` (`scalar=True`: one `nu` for all
    parameters, `nu' = b2 nu + (1-b2) mean(g^2)`), update `mu_hat / (sqrt(nu_hat) + eps)` with
    optax's bias correction (optional) and Nesterov form (`nesterov=True`, as `optax.nadam`).
    `b1 = 0` is RMSProp (no first moment is stored)."""

    def init_fn(params):
        mu = jnp.zeros_like(params) if b1 > 0 else ()
        nu = jnp.zeros((), params.dtype) if scalar else jnp.zeros_like(params)
        return MomentsState(jnp.zeros((), jnp.int32), mu, nu)

    def update_fn(g, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        g2 = jnp.mean(g**2) if scalar else g**2
        nu = b2 * state.nu + (1 - b2) * g2
        nu_hat = nu / (1 - b2 ** count) if bias_correction else nu
        if b1 > 0:
            mu = b1 * state.mu + (1 - b1) * g
            if nesterov:
                c1 = (1 - b1 ** (count + 1)) if bias_correction else 1.0
                c0 = (1 - b1 ** count) if bias_correction else 1.0
                mu_hat = b1 * mu / c1 + (1 - b1) * g / c0
            else:
                mu_hat = mu / (1 - b1 ** count) if bias_correction else mu
        else:
            mu, mu_hat = (), g
        return mu_hat / (jnp.sqrt(nu_hat) + eps), MomentsState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def preconditioned_eigenpairs(loss, x, scale, U0, *, method="auto", max_iters=40):
    """Top eigenpairs of `diag(scale) H(x) diag(scale)` (the spectrum of `P H` for
    `scale = sqrt(P)`), as the Hessian of `y -> loss(x + scale * y)` at `y = 0`."""
    return top_eigenpairs(lambda y: loss(x + scale * y), jnp.zeros_like(x), U0, method=method,
                          max_iters=max_iters)


class _Adaptive(OptaxMap):
    """Shared code of the RMSProp / Adam family: preconditioner `P = sqrt(nu_hat) + eps` of the
    step taken from `z` (`nu_hat` from `nu' = b2 nu + (1-b2) g^2` at `x`, bias-corrected at count
    `t + 1` when `bias_correction`; `t=None` uses the asymptotic `nu_hat = nu'`). Effective
    sharpness: top eigenvalue of `P^{-1} H` (computed as that of `P^{-1/2} H P^{-1/2}`)."""

    beta2: float = 0.999
    eps: float = 1e-8
    bias_correction: bool = eqx.field(static=True, default=True)
    nesterov: ClassVar[bool] = False
    scalar: ClassVar[bool] = False

    def _builtin(self, lr):
        return None

    def optimizer(self, lr):
        opt = self._builtin(lr)
        if opt is not None:
            return opt
        return optax.chain(
            scale_by_moments(getattr(self, "beta1", 0.0), self.beta2, self.eps,
                             bias_correction=self.bias_correction, nesterov=self.nesterov,
                             scalar=self.scalar),
            optax.scale_by_learning_rate(lr))

    def preconditioner(self, problem, z, t=None):
        x, state = self.unpack(problem, z, t)
        lay = self._layout(problem)
        leaves = jax.tree.leaves(state)
        nu = [leaves[i] for i in lay.float_order if _is_nu(lay.paths[i])][0]
        g = jax.grad(problem.loss_flat)(x)
        nu1 = self.beta2 * nu + (1 - self.beta2) * (jnp.mean(g**2) if nu.ndim == 0 else g**2)
        if self.bias_correction and t is not None:
            nu1 = nu1 / (1 - self.beta2 ** (jnp.asarray(t, z.dtype) + 1))
        return jnp.sqrt(nu1) + self.eps

    def sharpness(self, problem, z, lr, U0, t=None, *, method="auto", max_iters=40):
        scale = jax.lax.rsqrt(self.preconditioner(problem, z, t))
        return preconditioned_eigenpairs(problem.loss_flat, self.params(problem, z), scale, U0,
                                         method=method, max_iters=max_iters)


class RMSProp(_Adaptive):
    """RMSProp, `optax.rmsprop(lr, decay=beta2, eps=eps, eps_in_sqrt=False, bias_correction=...)`:
    `nu' = b2 nu + (1-b2) g^2`, `x' = x - lr g / (sqrt(nu_hat) + eps)`; `z = (x, nu)`.
    Frozen-preconditioner stability: `lr * lambda_max(P^{-1} H) < 2`, threshold `2/lr`.
    (`eps` outside the square root, as in Adam; optax's default puts it inside.)"""

    name: ClassVar[str] = "rmsprop"
    beta2: float = 0.99
    bias_correction: bool = eqx.field(static=True, default=False)

    def _builtin(self, lr):
        return optax.rmsprop(lr, decay=self.beta2, eps=self.eps, eps_in_sqrt=False,
                             bias_correction=self.bias_correction)

    def threshold(self, lr):
        return 2.0 / lr


class ScalarRMSProp(RMSProp):
    """RMSProp with one second-moment scalar for all parameters (`nu' = b2 nu + (1-b2) mean(g^2)`),
    a custom optax transformation ([`scale_by_moments`][]). Threshold `2/lr` on
    `lambda_max(H) / P`."""

    name: ClassVar[str] = "scalar-rmsprop"
    scalar: ClassVar[bool] = True

    def _builtin(self, lr):
        return None


class Adam(_Adaptive):
    """Adam, `optax.adam(lr, b1, b2, eps)` (custom [`scale_by_moments`][] when
    `bias_correction=False`); `z = (x, mu, nu)`. With the preconditioner frozen, the
    `(x, mu)` dynamics is heavy ball with step `lr (1-beta1)` and momentum `beta1`, so it is
    stable iff `lambda_max(P^{-1} H) < (2 + 2 beta1) / ((1 - beta1) lr)` (bias correction scales
    the step by `1/(1 - beta1^t)`, which tends to 1)."""

    name: ClassVar[str] = "adam"
    beta1: float = 0.9

    def _builtin(self, lr):
        if self.bias_correction and not self.scalar:
            return optax.adam(lr, b1=self.beta1, b2=self.beta2, eps=self.eps)
        return None

    def threshold(self, lr):
        return (2.0 + 2.0 * self.beta1) / ((1.0 - self.beta1) * lr)


class NAdam(Adam):
    """NAdam, `optax.nadam(lr, b1, b2, eps)`: the update uses `beta1 mu' + (1 - beta1) g`.
    Frozen-preconditioner stability: `lambda_max(P^{-1} H) <
    2 (1 + beta1) / ((1 - beta1)(1 + 2 beta1) lr)` (Nesterov's threshold with step
    `lr (1 - beta1)`)."""

    name: ClassVar[str] = "nadam"
    nesterov: ClassVar[bool] = True

    def _builtin(self, lr):
        if self.bias_correction and not self.scalar:
            return optax.nadam(lr, b1=self.beta1, b2=self.beta2, eps=self.eps)
        return None

    def threshold(self, lr):
        return 2.0 * (1.0 + self.beta1) / ((1.0 - self.beta1) * (1.0 + 2.0 * self.beta1) * lr)


class ScalarAdam(Adam):
    """Adam with one second-moment scalar for all parameters (custom [`scale_by_moments`][]).
    Threshold as Adam's on `lambda_max(H) / P`."""

    name: ClassVar[str] = "scalar-adam"
    scalar: ClassVar[bool] = True


MAPS: dict[str, type[AbstractMap]] = {
    "gd": GradientDescent, "heavy-ball": HeavyBall, "nesterov": Nesterov, "rmsprop": RMSProp,
    "adam": Adam, "nadam": NAdam, "scalar-rmsprop": ScalarRMSProp, "scalar-adam": ScalarAdam,
}


def make_map(name: str, **opts) -> AbstractMap:
    """A map by name (`gd`, `heavy-ball`, `nesterov`, `rmsprop`, `adam`, `nadam`, `scalar-rmsprop`,
    `scalar-adam`) with the options it has among `beta`, `beta1`, `beta2`, `eps`,
    `bias_correction` (options it does not have, or `None`, are ignored)."""
    if name not in MAPS:
        raise ValueError(f"unknown optimizer {name!r}; choose from: {', '.join(MAPS)}.")
    cls = MAPS[name]
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in opts.items() if k in fields and v is not None})


def transient_steps(optimizer: AbstractMap, tol: float = 1e-2) -> int:
    """Steps for the opening transient of a momentum optimiser started at rest to decay to `tol`.

    Started at rest, heavy ball (and Adam, with `beta1`) rings: every direction whose step-size
    times curvature lies between `(1 - sqrt(beta))^2` and `(1 + sqrt(beta))^2` has a complex pair
    of eigenvalues of modulus `sqrt(beta)`, so the ringing decays by `sqrt(beta)` per step and
    needs `ceil(2 ln(tol) / ln(beta))` steps to fall to `tol` (88 for `beta = 0.9`, 14 for 0.5).
    No flow models it: [`rodflow.compare`][]`(start_step=...)` can start the flows after it.
    0 for optimisers without momentum (GD, RMSProp) and for maps of unknown momentum."""
    if not 0 < tol < 1:
        raise ValueError(f"`tol` must be in (0, 1), got {tol!r}.")
    beta = getattr(optimizer, "beta1", getattr(optimizer, "beta", 0.0))
    beta = float(beta or 0.0)
    if not 0 < beta < 1:
        return 0
    return int(math.ceil(2.0 * math.log(tol) / math.log(beta)))
