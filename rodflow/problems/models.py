"""Equinox models used by the built-in problems. All take `key=` and act on one example."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
}


def activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def _lecun_linear(in_size: int, out_size: int, *, key: PRNGKeyArray, dtype=None) -> eqx.nn.Linear:
    """A linear layer with weights N(0, 1/fan_in) and zero biases."""
    layer = eqx.nn.Linear(in_size, out_size, key=key, dtype=dtype)
    w = jr.normal(key, (out_size, in_size), dtype=layer.weight.dtype) / jnp.sqrt(in_size)
    layer = eqx.tree_at(lambda lyr: lyr.weight, layer, w)
    return eqx.tree_at(lambda lyr: lyr.bias, layer, jnp.zeros_like(layer.bias))


class MLP(eqx.Module):
    """Fully connected network `in -> width x depth -> out`; weights N(0, 1/fan_in), biases 0."""

    layers: tuple[eqx.nn.Linear, ...]
    act: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, width: int = 64, depth: int = 2,
                 act: str = "tanh", *, key: PRNGKeyArray, dtype=None):
        activation(act)
        if width <= 0 or depth < 0:
            raise ValueError(f"MLP needs width > 0 and depth >= 0, got width={width}, depth={depth}.")
        sizes = [in_size] + [width] * depth + [out_size]
        keys = jr.split(key, len(sizes) - 1)
        self.layers = tuple(
            _lecun_linear(a, b, key=k, dtype=dtype) for a, b, k in zip(sizes[:-1], sizes[1:], keys)
        )
        self.act = act

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " o"]:
        f = activation(self.act)
        for layer in self.layers[:-1]:
            x = f(layer(x))
        return self.layers[-1](x)
