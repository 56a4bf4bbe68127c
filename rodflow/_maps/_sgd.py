"""Gradient descent and the momentum methods of `optax.sgd`: GD, heavy ball, Nesterov."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import optax

from .._problem import Problem
from ._base import AbstractMomentumMap, AbstractPlainGradientMap
from ._optax import AbstractOptaxMap


class GradientDescent(AbstractPlainGradientMap, AbstractMomentumMap):
    """Full-batch gradient descent, `x_{k+1} = x_k - lr * grad L(x_k)` (`optax.sgd`), `z = x`.
    Effective sharpness: the top Hessian eigenvalue; threshold `2/lr`. Second-order form: heavy
    ball with `beta = 0`."""

    name: ClassVar[str] = "gd"

    def optimizer(self, lr) -> optax.GradientTransformation:
        return optax.sgd(lr)

    def delta(self, problem: Problem, x, lr, t=None):
        return -lr * jax.grad(problem.loss_flat)(x)

    def threshold(self, lr):
        return 2.0 / lr

    def rod_sharpness(self, q, lr):
        return -q / lr

    def coefficients(self, lr, k):
        return 0.0, lr


class AbstractSGDMomentumMap(AbstractOptaxMap):
    """`optax.sgd(lr, momentum=beta, nesterov=...)` on `z = (x, m)`."""

    beta: eqx.AbstractVar[float]
    nesterov: eqx.AbstractClassVar[bool]

    def optimizer(self, lr):
        return optax.sgd(lr, momentum=self.beta, nesterov=self.nesterov)

    def momentum(self) -> float:
        return self.beta


class HeavyBall(AbstractSGDMomentumMap, AbstractMomentumMap):
    """Heavy ball, `optax.sgd(lr, momentum=beta)`: `m' = g + beta m`, `x' = x - lr m'`;
    `z = (x, m)`. Linear stability on `L = lam x^2/2`: stable iff `lr lam < 2 + 2 beta`, so the
    effective sharpness is the top Hessian eigenvalue and the threshold `(2 + 2 beta)/lr`.
    Second-order form: `x_{k+1} - x_k = beta (x_k - x_{k-1}) - lr g(x_k)`, i.e. `(beta, lr)`."""

    name: ClassVar[str] = "heavy-ball"
    beta: float = 0.9
    nesterov: ClassVar[bool] = False

    def threshold(self, lr):
        return (2.0 + 2.0 * self.beta) / lr

    def coefficients(self, lr, k):
        return self.beta, lr


class Nesterov(AbstractSGDMomentumMap):
    """Nesterov momentum, `optax.sgd(lr, momentum=beta, nesterov=True)`:
    `m' = g + beta m`, `x' = x - lr (g + beta m')`. Stable on `L = lam x^2/2` iff
    `lr lam < (2 + 2 beta) / (1 + 2 beta)` (the characteristic polynomial
    `mu^2 - (1 + beta)(1 - a) mu + beta (1 - a)`, `a = lr lam`, has a root at -1 there).
    Not of heavy-ball form (the gradient enters twice): the momentum flows do not model it."""

    name: ClassVar[str] = "nesterov"
    beta: float = 0.9
    nesterov: ClassVar[bool] = True

    def threshold(self, lr):
        return (2.0 + 2.0 * self.beta) / ((1.0 + 2.0 * self.beta) * lr)
