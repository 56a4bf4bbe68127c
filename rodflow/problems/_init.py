"""Initialisations that do not depend on the working dtype."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

T = TypeVar("T")


def dtype_independent(build: Callable[[PRNGKeyArray, Any], T], dtype) -> Callable[[PRNGKeyArray], T]:
    """`init(key)` that builds the model with `build(key, float32)` (every random draw made in
    float32) and casts its floating-point arrays to `dtype`: the same seed gives the same
    parameters, up to float32 rounding, with or without `jax_enable_x64`."""

    def init(key):
        model = build(key, jnp.float32)
        return jax.tree.map(lambda a: a.astype(jnp.float32).astype(dtype) if eqx.is_inexact_array(a) else a,
                            model)

    return init
