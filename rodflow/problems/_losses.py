"""Losses as Equinox modules that hold their data (so the data is traced, never baked in)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._digits import MSELoss as MSELoss


def default_dtype():
    """float64 under `jax_enable_x64`, else float32 (the dtype of `jnp.asarray(0.0)`)."""
    return jnp.asarray(0.0).dtype


class CrossEntropyLoss(eqx.Module):
    """Softmax cross-entropy of a model applied to each example, averaged over examples.

    - `x`: inputs, one per example (any array; integer token ids are fine).
    - `y`: one-hot (or soft) targets, `(n, classes)` for classification or `(n, T, vocab)` for
      sequences.
    - `mask`: optional `(n, T)` weights for sequences; the loss is then the mean over the
      predicted (masked-in) tokens: `sum(mask * nll) / sum(mask)`.
    """

    x: Array
    y: Float[Array, "..."]
    mask: Float[Array, "..."] | None = None

    @property
    def examples(self) -> int:
        """The number of examples (the leading axis of `x`, `y` and `mask`; data-parallel runs
        split it)."""
        return self.x.shape[0]

    def __call__(self, model):
        logits = jax.vmap(model)(self.x)
        nll = -jnp.sum(self.y * jax.nn.log_softmax(logits, axis=-1), axis=-1)
        if self.mask is None:
            return jnp.mean(nll)
        return jnp.sum(self.mask * nll) / jnp.sum(self.mask)
