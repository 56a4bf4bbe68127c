"""Learning-rate schedules: a step size `lr(t)` that changes with the step.

A grid point's step size is `lr_g(t) = scale_g * shape(t)`: `scale` is the traced per-point
array (`lr` of a constant run, shape `(G,)`) and `shape` a static callable `t -> float` (an
optax schedule, or any function written with `jax.numpy`); `shape=None` is a constant step size,
and then `scale` is used as it is (nothing is multiplied). The discrete run's step `k` uses
`lr(k)` (as `optax.sgd(schedule)` does); a flow at time `t` models the pair `(z_t, z_{t+1})` and
uses `lr(t + 1/2)`; the threshold at step `k` is `threshold(lr(k))`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _io


def scaled(lr, shape: Callable | None, t):
    """`lr * shape(t)` in the dtype of `lr` (`t=None`: step 0); `lr` itself without a schedule."""
    if shape is None:
        return lr
    dtype = jnp.result_type(lr)
    return lr * jnp.asarray(shape(0 if t is None else t)).astype(dtype)


def shape_values(shape: Callable, steps: int, dtype) -> np.ndarray:
    """`shape(k)` for `k = 0..steps` (int32 step counts, as optax's `count`), in `dtype`."""
    ks = jnp.arange(steps + 1, dtype=jnp.int32)
    return np.asarray(jax.vmap(lambda k: jnp.asarray(shape(k)).astype(dtype))(ks))


def lr_table(scales, shape: Callable, steps: int, dtype) -> np.ndarray:
    """`(G, steps + 1)`: grid point `g`'s step size at every step, `scales[g] * shape(k)`,
    computed as the run computes it."""
    values = jnp.asarray(shape_values(shape, steps, dtype))
    return np.asarray(jnp.asarray(scales, dtype)[:, None] * values[None, :])


def check_schedule(name: str, shape, steps: int) -> np.ndarray:
    """Validate a schedule over the run's steps `0..steps`; returns its values (float64).
    One-line `ValueError`s name the argument `name` and the fix."""
    if not callable(shape):
        raise ValueError(f"`{name}` must be a callable step -> step size (e.g. optax.linear_schedule(...)), "
                         f"got {shape!r}.")
    try:
        values = shape_values(shape, steps, jnp.result_type(float))
    except Exception as e:  # noqa: BLE001 - any failure to trace the user's function
        first = (str(e).splitlines() or [""])[0]
        raise ValueError(f"`{name}`: the schedule must map a traced step count to a scalar with jax.numpy "
                         f"operations (as optax schedules do); calling it failed ({type(e).__name__}: "
                         f"{first}).") from e
    if values.shape != (steps + 1,):
        raise ValueError(f"`{name}`: the schedule must return one scalar step size per step, got shape "
                         f"{values.shape[1:]}.")
    bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"`{name}`: the schedule must be positive and finite at every step 0..{steps}, "
                         f"but lr({k}) = {values[k]!r}; give a schedule with positive values over the run.")
    return values.astype(np.float64)


def describe(shape: Callable) -> str | dict:
    """What `metrics.json` records as `lr_schedule`: the description attached by
    [`named`][] (name and parameters), else `"custom"`."""
    return getattr(shape, "rodflow_description", "custom")


def digest(shape: Callable, steps: int, dtype) -> str:
    """A hash of the schedule's values over steps `0..steps` (for the checkpoint's config: a
    callable's repr holds an address, which changes from run to run)."""
    return _io.digest(shape_values(shape, steps, dtype))


class named:
    """A schedule with a description for `metrics.json` (`lr_schedule`): `named(fn, name,
    **params)` calls `fn` and records `{"name": name, **params}`."""

    def __init__(self, fn: Callable, name: str, **params):
        self.fn = fn
        self.rodflow_description = {"name": name, **params}

    def __call__(self, t):
        return self.fn(t)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.rodflow_description.items() if k != "name")
        return f"{self.rodflow_description['name']}({args})"
