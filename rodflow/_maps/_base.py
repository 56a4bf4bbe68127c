"""The interface every optimiser map publishes, and the capabilities that flows ask for.

A map is `F(z) = z + delta(z)`, one step of the discrete optimiser on its joint state `z`. It
publishes its structure once, as a typed view of `z` ([`MapState`][]), and the quantities the
flows read: its step `delta`, its EoS threshold, its effective sharpness, its momentum.
What a flow may need beyond that is a *capability*, a marker abstract class (like diffrax's
`AbstractAdaptiveSolver`) that a map inherits and a flow lists in its `requires`:

- [`AbstractPlainGradientMap`][]: `z = x` and `delta = -lr grad L(x)` (gradient descent).
- [`AbstractMomentumMap`][]: the map has a second-order (heavy-ball) form,
  `x_{k+1} - x_k = beta_k (x_k - x_{k-1}) - lr_k (P_k^{-1} g(x_k) + wd x_k)`.
- [`AbstractPreconditionedMap`][]: a diagonal preconditioner `P = sqrt(nu_hat) + eps` built
  from a second moment `nu`, which a flow may keep as a smooth variable.

Abstract classes (named `Abstract...`) hold the shared code; concrete maps are final: they
cannot be subclassed (a `TypeError` at class creation), so adding an optimiser is one class.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import numbers
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._problem import Problem
from .._spectrum import top_eigenpairs


def is_abstract(cls) -> bool:
    """Equinox's convention: a class is abstract iff its name starts with `Abstract` (or
    `_Abstract`) or it leaves abstract methods unimplemented."""
    return cls.__name__.startswith(("Abstract", "_Abstract")) or bool(getattr(cls, "__abstractmethods__", ()))


def check_final(cls, root: type) -> None:
    """Raise a `TypeError` if `cls` subclasses a concrete (hence final) subclass of `root`."""
    for base in cls.__mro__[1:]:
        if base is not root and issubclass(base, root) and not is_abstract(base):
            raise TypeError(
                f"{cls.__name__} subclasses {base.__name__}, a concrete (final) class; share code "
                f"through an abstract parent instead (e.g. subclass the `Abstract...` class that "
                f"{base.__name__} derives from)."
            )


# The range of each hyper-parameter name (the same name means the same thing in every map).
_UNIT, _NONNEGATIVE = (0.0, 1.0, "in [0, 1)"), (0.0, math.inf, ">= 0")
_RANGES = {"beta": _UNIT, "beta1": _UNIT, "beta2": _UNIT, "eps": _NONNEGATIVE, "weight_decay": _NONNEGATIVE}


def check_hyperparameter(optimizer: str, name: str, value) -> None:
    """One-line `ValueError` naming the optimiser and the option unless `value` is in range."""
    if name == "bias_correction" and not isinstance(value, bool):
        raise ValueError(f"optimizer {optimizer!r}: `bias_correction` must be True or False, got {value!r}.")
    if name not in _RANGES:
        return
    lo, hi, text = _RANGES[name]
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and lo <= value < hi
    if not ok:
        raise ValueError(f"optimizer {optimizer!r}: `{name}` must be a number {text}, got {value!r}.")


class MapState(NamedTuple):
    """The typed view of a map's joint state `z = (params, momentum, nu)` (flat vectors).

    - `params`: the flat parameters `x`;
    - `momentum`: the rest of the floating-point optimiser state, in optax's tree order (heavy
      ball's `m`, Adam's `mu`); empty when there is none;
    - `nu`: the second moments (RMSProp, Adam), last so that a flow can keep them as a smooth
      variable; empty when there are none (one entry for the scalar variants).
    """

    params: Float[Array, " p"]
    momentum: Float[Array, " m"]
    nu: Float[Array, " n"]


def smooth_join(rod, nu):
    """`z` from [`AbstractMap.smooth_split`][]'s `(rod part, nu)`: the second moments are last."""
    return jnp.concatenate([rod, nu])


def preconditioned_eigenpairs(loss, x, scale, U0, *, method="auto", max_iters=40):
    """Top eigenpairs of `diag(scale) H(x) diag(scale)` (the spectrum of `P^{-1} H` for
    `scale = P^{-1/2}`), as the Hessian of `y -> loss(x + scale * y)` at `y = 0`."""
    return top_eigenpairs(lambda y: loss(x + scale * y), jnp.zeros_like(x), U0, method=method,
                          max_iters=max_iters)


class AbstractMap(eqx.Module):
    """A one-step optimiser map on `z` (`z = x`, the flat parameters, for GD).

    **Time.** `delta(problem, z, lr, t)`: `t` is the step index `k` of the state `z` (the
    optimiser's `count`). Only bias-corrected maps depend on it; `t=None` means count 0 there.
    A flow at time `t` models the pair `(z_t, z_{t+1})`, so the flows evaluate the map at
    `t + 1/2`.

    **Hyper-parameters** are the dataclass fields (`beta`, `beta1`, `beta2`, `eps`,
    `bias_correction`, `weight_decay`), the same names in every class that has them.
    """

    name: eqx.AbstractClassVar[str]
    sharpness_kind: ClassVar[str] = "hessian"  # "preconditioned" for AbstractPreconditionedMap

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        check_final(cls, AbstractMap)

    def __check_init__(self):
        for f in dataclasses.fields(self):
            check_hyperparameter(self.name, f.name, getattr(self, f.name))

    @abc.abstractmethod
    def optimizer(self, lr):
        """The optax optimiser (`optax.GradientTransformation`) that the `discrete` run executes."""

    @abc.abstractmethod
    def delta(self, problem: Problem, z, lr, t=None):
        """`F(z) - z` for one step of size `lr` from the state `z` at step `t`."""

    @abc.abstractmethod
    def threshold(self, lr):
        """Stability threshold on the effective sharpness, e.g. `2 / lr` for GD."""

    def momentum(self) -> float:
        """The momentum coefficient of the map (heavy ball's `beta`, Adam's `beta1`); 0 for maps
        without momentum and for maps of unknown momentum. See [`transient_steps`][]."""
        return 0.0

    # -- the joint state; defaults: z = x -------------------------------------------------------
    def init_state(self, problem: Problem, x0, lr):
        """`z0` for a run started at the parameters `x0`."""
        return x0

    def pack(self, problem: Problem, x, opt_state):
        """`z` from the parameters and the optax state of the discrete run."""
        return x

    def split(self, problem: Problem, z) -> MapState:
        """The typed view [`MapState`][] of `z` (also of any vector laid out like `z`, e.g. a
        `delta`)."""
        return MapState(z, z[:0], z[:0])

    def join(self, state: MapState):
        """`z` from its typed view (the inverse of [`split`][])."""
        return jnp.concatenate([state.params, state.momentum, state.nu])

    def params(self, problem: Problem, z):
        """The parameters `x` of `z` (what is compared with the discrete run's centres)."""
        return self.split(problem, z).params

    def smooth_split(self, problem: Problem, z):
        """`(rod part, nu)`: `z` without its second moments, and the second moments (which a
        flow may keep as a smooth variable without a rod component)."""
        state = self.split(problem, z)
        return jnp.concatenate([state.params, state.momentum]), state.nu

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


# ---------------------------------------------------------------------------------------------
# capabilities
# ---------------------------------------------------------------------------------------------
class AbstractPlainGradientMap(AbstractMap):
    """Capability: plain gradient steps, `z = x` and `delta = -lr grad L(x)` (what Central Flow
    models: it uses `lr` and the Hessian of the loss directly)."""

    capability: ClassVar[str] = "a map with plain gradient steps (GradientDescent)"


class AbstractMomentumMap(AbstractMap):
    """Capability: a second-order (heavy-ball) form. At step `k`, with a slowly varying
    preconditioner `P_k` (1 without one, `nu` smooth: its change between two steps is
    neglected) and a decoupled weight decay `wd` (0 without one),

        x_{k+1} - x_k = beta_k (x_k - x_{k-1}) - lr_k (P_k^{-1} g(x_k) + wd x_k).

    GD is `(0, lr)`, heavy ball `(beta, lr)`; Adam's first moment is an EMA, so
    `(beta1, lr (1 - beta1))`, and with bias correction `beta_k = beta1 B(k-1)/B(k)`,
    `lr_k = lr (1 - beta1)/B(k)`, `B(k) = 1 - beta1^(k+1)`; RMSProp is `beta1 = 0`.
    """

    capability: ClassVar[str] = (
        "a map with a second-order (heavy-ball) form (GD, heavy ball, RMSProp, Adam, AdamW and the "
        "scalar variants)"
    )

    @abc.abstractmethod
    def coefficients(self, lr, k):
        """`(beta_k, lr_k)` of the second-order form at (fractional) step `k`."""

    def decoupled_decay(self) -> float | None:
        """`wd` of the second-order form (`None`: no decoupled weight decay)."""
        return None


class AbstractPreconditionedMap(AbstractMap):
    """Capability: a diagonal preconditioner `P = sqrt(nu_hat) + eps` from the second moment
    `nu` (`nu_hat = nu / (1 - beta2^count)` with bias correction); the effective sharpness is
    the top eigenvalue of `P^{-1} H` (computed as that of `P^{-1/2} H P^{-1/2}`). The second
    moments are `split(z).nu`."""

    capability: ClassVar[str] = "a map with a diagonal preconditioner (RMSProp, Adam and relatives)"
    sharpness_kind: ClassVar[str] = "preconditioned"

    @abc.abstractmethod
    def preconditioner(self, nu, count):
        """`P = sqrt(nu_hat) + eps` for the second moment `nu` at (fractional) `count`
        (`None`: no bias correction)."""

    @abc.abstractmethod
    def step_preconditioner(self, problem: Problem, z, t=None):
        """`P` of the step taken from `z` at step `t`: `nu' = b2 nu + (1-b2) g^2` at `x`,
        bias-corrected at count `t + 1` (`t=None`: the asymptotic `nu_hat = nu'`)."""

    @abc.abstractmethod
    def nu_drive(self, g2, nu):
        """`dnu/dt = (1 - beta2) (g^2 - nu)`, the second moment's ODE (`g2 = g^2`, averaged
        over the parameters for the scalar variants)."""

    def sharpness(self, problem, z, lr, U0, t=None, *, method="auto", max_iters=40):
        scale = jax.lax.rsqrt(self.step_preconditioner(problem, z, t))
        return preconditioned_eigenpairs(problem.loss_flat, self.params(problem, z), scale, U0,
                                         method=method, max_iters=max_iters)


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
    beta = float(optimizer.momentum() or 0.0)
    if not 0 < beta < 1:
        return 0
    return int(math.ceil(2.0 * math.log(tol) / math.log(beta)))
