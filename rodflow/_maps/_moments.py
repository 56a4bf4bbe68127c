"""The RMSProp / Adam family: one definition of the moments, the preconditioner and the
second-order form, shared by the concrete optimisers of [`_adam`][]."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._base import AbstractMomentumMap, AbstractPreconditionedMap
from ._optax import AbstractOptaxMap


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


class AbstractMomentsMap(AbstractOptaxMap, AbstractPreconditionedMap):
    """The RMSProp / Adam family on `z = (x, mu, nu)` (`z = (x, nu)` without a first moment):
    `mu' = b1 mu + (1-b1) g`, `nu' = b2 nu + (1-b2) g^2`, `x' = x - lr mu_hat / P` with the
    preconditioner `P = sqrt(nu_hat) + eps` (eps outside the square root, as in Adam).

    **The preconditioner** (one definition, [`preconditioner`][]): `nu_hat = nu / (1 - b2^count)`
    with bias correction. The discrete run's step from `z` at step `t` uses `nu'` at count
    `t + 1` ([`step_preconditioner`][]: the effective sharpness `lambda_max(P^{-1} H)` of the
    discrete run and of the flows on `z`); the momentum flows evaluate it on their smooth `nu`
    at the centre's fractional count. The scalar variants (`scalar = True`) keep one `nu` for
    all parameters, driven by `mean(g^2)`.

    The optimiser is optax's own where it has one (`_builtin`), else
    [`scale_by_moments`][] followed by the decoupled weight decay, if any, and `-lr`.
    """

    beta2: eqx.AbstractVar[float]
    eps: eqx.AbstractVar[float]
    bias_correction: eqx.AbstractVar[bool]
    nesterov: ClassVar[bool] = False  # the Nesterov form of the first moment (NAdam)
    scalar: ClassVar[bool] = False  # one second moment for all parameters

    def _builtin(self, lr):
        return None

    def _decoupled(self) -> tuple:
        return ()

    def optimizer(self, lr):
        opt = self._builtin(lr)
        if opt is not None:
            return opt
        return optax.chain(
            scale_by_moments(self.momentum(), self.beta2, self.eps, bias_correction=self.bias_correction,
                             nesterov=self.nesterov, scalar=self.scalar),
            *self._decoupled(),
            optax.scale_by_learning_rate(lr))

    def nu_target(self, g2):
        """What `nu` relaxes to: `g^2` (its mean over the parameters for the scalar variants)."""
        return jnp.mean(g2) if self.scalar else g2

    def preconditioner(self, nu, count):
        if self.bias_correction and count is not None:
            nu = nu / (1.0 - self.beta2 ** count)
        return jnp.sqrt(jnp.maximum(nu, 0.0)) + self.eps

    def step_preconditioner(self, problem, z, t=None):
        x, state = self.unpack(problem, z, t)
        nu = self.nu_leaf(problem, state)
        g = jax.grad(problem.loss_flat)(x)
        nu1 = self.beta2 * nu + (1 - self.beta2) * self.nu_target(g**2)
        return self.preconditioner(nu1, None if t is None else jnp.asarray(t, z.dtype) + 1)

    def nu_drive(self, g2, nu):
        return (1.0 - self.beta2) * (self.nu_target(g2) - nu)


class AbstractAdamFamilyMap(AbstractMomentsMap, AbstractMomentumMap):
    """The members of the family with a heavy-ball form (not NAdam): with `P` frozen, Adam's
    `(x, mu)` dynamics is heavy ball with momentum `beta1` and step `lr (1 - beta1)` on
    `P^{-1} g`; bias correction makes them `beta_k = beta1 B(k-1)/B(k)`,
    `lr_k = lr (1 - beta1)/B(k)`, `B(k) = 1 - beta1^(k+1)` (`mu_hat_k = beta_k mu_hat_{k-1} +
    (lr_k / lr) g_k` exactly). RMSProp is `beta1 = 0`: `(0, lr)`."""

    def coefficients(self, lr, k):
        b1 = self.momentum()
        if not (self.bias_correction and b1 > 0):
            return b1, lr * (1.0 - b1)
        big = 1.0 - b1 ** (k + 1.0)
        small = 1.0 - b1 ** jnp.maximum(k, 0.0)
        return b1 * small / big, lr * (1.0 - b1) / big
