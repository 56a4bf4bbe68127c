"""One-step maps `F(z) = z + delta(z)` of the discrete optimiser.

GD is `optax.sgd(lr)`: `F(x) = x - lr * g(x)`. Every flow is built from `delta`, so adding an
optimiser means adding one map. The rod flows only need `delta` (and its derivatives).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import optax

from ._problem import Problem


class AbstractMap(eqx.Module):
    """A one-step optimiser map on the flat parameter vector."""

    name: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def optimizer(self, lr) -> optax.GradientTransformation:
        """The optax optimiser that the `discrete` run executes."""

    @abc.abstractmethod
    def delta(self, problem: Problem, x, lr):
        """`F(x) - x` for one step of size `lr`."""

    @abc.abstractmethod
    def threshold(self, lr):
        """Stability threshold on the (effective) sharpness, e.g. `2 / lr` for GD."""


class GradientDescent(AbstractMap):
    """Full-batch gradient descent, `x_{k+1} = x_k - lr * grad L(x_k)` (`optax.sgd`)."""

    name: ClassVar[str] = "gd"

    def optimizer(self, lr) -> optax.GradientTransformation:
        return optax.sgd(lr)

    def delta(self, problem: Problem, x, lr):
        return -lr * jax.grad(problem.loss_flat)(x)

    def threshold(self, lr):
        return 2.0 / lr
