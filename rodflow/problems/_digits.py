"""The flagship real problem: an MLP on the sklearn digits (bundled with scikit-learn)."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from .._problem import Problem
from ._init import dtype_independent
from ._registry import register
from .models import MLP


@functools.lru_cache(maxsize=4)
def load_digits(n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """First `n` sklearn digits: inputs (n, 64) divided by 16, one-hot targets (n, 10)."""
    from sklearn.datasets import load_digits as _load

    data = _load()
    if not 0 < n <= len(data.target):
        raise ValueError(f"option `n` must be in 1..{len(data.target)} for the digits data, got {n}.")
    x = np.asarray(data.data[:n], dtype=np.float64) / 16.0
    y = np.eye(10)[data.target[:n]]
    return x, y


class MSELoss(eqx.Module):
    """`1/2 * mean_i sum_j (f(x_i)_j - y_ij)^2` of a model applied to each example (`x` any shape)."""

    x: Float[Array, "n ..."]
    y: Float[Array, "n ..."]

    @property
    def examples(self) -> int:
        """The number of examples (the leading axis of `x` and `y`; data-parallel runs split it)."""
        return self.x.shape[0]

    def __call__(self, model):
        pred = jax.vmap(model)(self.x)
        return 0.5 * jnp.mean(jnp.sum((pred - self.y) ** 2, axis=-1))


@register("mlp-digits")
def mlp_digits(n=500, width=64, depth=2, activation="tanh", seed=0) -> Problem:
    """Equinox MLP on the first `n` sklearn digits, MSE loss; GD reaches EoS at lr 0.07."""
    x, y = load_digits(int(n))
    dtype = jnp.asarray(0.0).dtype  # float64 under jax_enable_x64, else float32
    loss = MSELoss(jnp.asarray(x, dtype), jnp.asarray(y, dtype))

    def build(key, dt):
        return MLP(64, 10, int(width), int(depth), str(activation), key=key, dtype=dt)

    init = dtype_independent(build, dtype)

    return Problem(loss, init(jr.PRNGKey(int(seed))), "mlp-digits", lr_hint=0.07, init=init)
