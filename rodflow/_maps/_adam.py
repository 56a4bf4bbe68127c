"""The concrete optimisers of the RMSProp / Adam family (final classes; the shared code is in
[`AbstractMomentsMap`][] and [`AbstractAdamFamilyMap`][])."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import optax

from ._moments import AbstractAdamFamilyMap, AbstractMomentsMap


class RMSProp(AbstractAdamFamilyMap):
    """RMSProp, `optax.rmsprop(lr, decay=beta2, eps=eps, eps_in_sqrt=False, bias_correction=...)`:
    `nu' = b2 nu + (1-b2) g^2`, `x' = x - lr g / (sqrt(nu_hat) + eps)`; `z = (x, nu)`.
    Frozen-preconditioner stability: `lr * lambda_max(P^{-1} H) < 2`, threshold `2/lr`.
    (`eps` outside the square root, as in Adam; optax's default puts it inside.)"""

    name: ClassVar[str] = "rmsprop"
    beta2: float = 0.99
    eps: float = 1e-8
    bias_correction: bool = eqx.field(static=True, default=False)

    def _builtin(self, lr):
        return optax.rmsprop(lr, decay=self.beta2, eps=self.eps, eps_in_sqrt=False,
                             bias_correction=self.bias_correction)

    def threshold(self, lr):
        return 2.0 / lr


class ScalarRMSProp(AbstractAdamFamilyMap):
    """RMSProp with one second-moment scalar for all parameters (`nu' = b2 nu + (1-b2) mean(g^2)`),
    a custom optax transformation ([`scale_by_moments`][]). Threshold `2/lr` on
    `lambda_max(H) / P`."""

    name: ClassVar[str] = "scalar-rmsprop"
    scalar: ClassVar[bool] = True
    beta2: float = 0.99
    eps: float = 1e-8
    bias_correction: bool = eqx.field(static=True, default=False)

    def threshold(self, lr):
        return 2.0 / lr


def _adam_threshold(beta1, lr):
    """Adam's threshold `(2 + 2 beta1) / ((1 - beta1) lr)` (heavy ball's, with step
    `lr (1 - beta1)`)."""
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


class Adam(AbstractAdamFamilyMap):
    """Adam, `optax.adam(lr, b1, b2, eps)` (custom [`scale_by_moments`][] when
    `bias_correction=False`); `z = (x, mu, nu)`. With the preconditioner frozen, the
    `(x, mu)` dynamics is heavy ball with step `lr (1-beta1)` and momentum `beta1`, so it is
    stable iff `lambda_max(P^{-1} H) < (2 + 2 beta1) / ((1 - beta1) lr)` (bias correction scales
    the step by `1/(1 - beta1^t)`, which tends to 1)."""

    name: ClassVar[str] = "adam"
    beta2: float = 0.999
    eps: float = 1e-8
    bias_correction: bool = eqx.field(static=True, default=True)
    beta1: float = 0.9

    def momentum(self) -> float:
        return self.beta1

    def _builtin(self, lr):
        return optax.adam(lr, b1=self.beta1, b2=self.beta2, eps=self.eps) if self.bias_correction else None

    def threshold(self, lr):
        return _adam_threshold(self.beta1, lr)


class ScalarAdam(AbstractAdamFamilyMap):
    """Adam with one second-moment scalar for all parameters (custom [`scale_by_moments`][]).
    Threshold as Adam's on `lambda_max(H) / P`."""

    name: ClassVar[str] = "scalar-adam"
    scalar: ClassVar[bool] = True
    beta2: float = 0.999
    eps: float = 1e-8
    bias_correction: bool = eqx.field(static=True, default=True)
    beta1: float = 0.9

    def threshold(self, lr):
        return _adam_threshold(self.beta1, lr)

    def momentum(self) -> float:
        return self.beta1


class NAdam(AbstractMomentsMap):
    """NAdam, `optax.nadam(lr, b1, b2, eps)`: the update uses `beta1 mu' + (1 - beta1) g`.
    Frozen-preconditioner stability: `lambda_max(P^{-1} H) <
    2 (1 + beta1) / ((1 - beta1)(1 + 2 beta1) lr)` (Nesterov's threshold with step
    `lr (1 - beta1)`). Not of heavy-ball form: the momentum flows do not model it."""

    name: ClassVar[str] = "nadam"
    beta2: float = 0.999
    eps: float = 1e-8
    bias_correction: bool = eqx.field(static=True, default=True)
    beta1: float = 0.9
    nesterov: ClassVar[bool] = True

    def _builtin(self, lr):
        return optax.nadam(lr, b1=self.beta1, b2=self.beta2, eps=self.eps) if self.bias_correction else None

    def momentum(self) -> float:
        return self.beta1

    def threshold(self, lr):
        return 2.0 * (1.0 + self.beta1) / ((1.0 - self.beta1) * (1.0 + 2.0 * self.beta1) * lr)


class AdamW(AbstractAdamFamilyMap):
    r"""AdamW, `optax.adamw(lr, b1, b2, eps, weight_decay=wd)` (custom [`scale_by_moments`][]
    with `optax.add_decayed_weights` when `bias_correction=False`): Adam with decoupled weight
    decay, `x' = x - lr (mu_hat / (sqrt(nu_hat) + eps) + wd x)`; `z = (x, mu, nu)`.

    **Second-order form.** With `P = sqrt(nu_hat) + eps` frozen, `y_k = mu_hat_k / P =
    -(d_k + lr wd x_k) / lr` (`d_k = x_{k+1} - x_k`) obeys Adam's recursion
    `y_k = beta_k y_{k-1} + (lr_k / lr) P^{-1} g_k`; eliminating `y` and using
    `lr (1 - beta_k) = lr_k`,

    $$x_{k+1} - x_k = \beta_k (1 - \eta\, wd)(x_k - x_{k-1}) - \eta_k (P^{-1} g(x_k) + wd\, x_k),$$

    i.e. heavy ball with momentum `beta_k (1 - lr wd)` and step `lr_k` (Adam's) on the
    preconditioned gradient plus the decay.

    **Threshold.** On `L = lam x^2/2` along an eigenvector of `P^{-1} H` (eigenvalue `lam`), heavy
    ball with momentum `b = beta1 (1 - lr wd)` and `a = lr (1 - beta1)(lam + wd)` has a root at
    -1 when `a = 2 + 2 b`: stable iff

    $$\lambda_{\max}(P^{-1} H) < \frac{1 + \beta_1}{1 - \beta_1}\Big(\frac{2}{\eta} - wd\Big)
    = \frac{2 + 2\beta_1 - (1 + \beta_1)\,\eta\, wd}{(1 - \beta_1)\,\eta}.$$

    The decay adds `wd` to every curvature (`lam + wd`) and also lowers the momentum, so the
    threshold drops by `wd (1 + beta1)/(1 - beta1)`, not by `wd`. With `wd = 0` everything is
    Adam's.
    """

    name: ClassVar[str] = "adamw"
    beta2: float = 0.999
    eps: float = 1e-8
    bias_correction: bool = eqx.field(static=True, default=True)
    beta1: float = 0.9
    weight_decay: float = 1e-4

    def momentum(self) -> float:
        return self.beta1

    def _builtin(self, lr):
        if not self.bias_correction:
            return None
        return optax.adamw(lr, b1=self.beta1, b2=self.beta2, eps=self.eps, weight_decay=self.weight_decay)

    def _decoupled(self) -> tuple:
        return (optax.add_decayed_weights(self.weight_decay),)

    def threshold(self, lr):
        b1 = self.beta1
        return (2.0 + 2.0 * b1 - (1.0 + b1) * lr * self.weight_decay) / ((1.0 - b1) * lr)

    def coefficients(self, lr, k):
        beta, lr_k = AbstractAdamFamilyMap.coefficients(self, lr, k)
        return beta * (1.0 - lr * self.weight_decay), lr_k

    def decoupled_decay(self) -> float | None:
        return self.weight_decay
