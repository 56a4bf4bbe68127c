"""Attention models used by the built-in problems (re-exported by `rodflow.problems.models`)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .models import _lecun_linear

# -- attention models ----------------------------------------------------------------------------
# Written with smooth operations only (matmuls, softmax, LayerNorm, GELU; the causal mask is a
# constant `where`), so every derivative the flows take -- up to third order -- is exact.


class _Attention(eqx.Module):
    qkv: eqx.nn.Linear
    proj: eqx.nn.Linear
    heads: int = eqx.field(static=True)
    causal: bool = eqx.field(static=True)

    def __init__(self, d: int, heads: int, causal: bool, *, key, dtype=None):
        if d % heads:
            raise ValueError(f"model width d={d} must be divisible by heads={heads}.")
        k1, k2 = jr.split(key)
        self.qkv = _lecun_linear(d, 3 * d, key=k1, dtype=dtype)
        self.proj = _lecun_linear(d, d, key=k2, dtype=dtype)
        self.heads, self.causal = heads, causal

    def __call__(self, x: Float[Array, "t d"]) -> Float[Array, "t d"]:
        t, d = x.shape
        q, k, v = jnp.split(jax.vmap(self.qkv)(x), 3, axis=-1)
        split = lambda a: a.reshape(t, self.heads, d // self.heads).transpose(1, 0, 2)
        q, k, v = split(q), split(k), split(v)
        scores = q @ k.transpose(0, 2, 1) / jnp.sqrt(jnp.asarray(d // self.heads, x.dtype))
        if self.causal:
            mask = jnp.tril(jnp.ones((t, t), dtype=bool))
            scores = jnp.where(mask, scores, jnp.asarray(-1e9, scores.dtype))
        out = jax.nn.softmax(scores, axis=-1) @ v  # (heads, t, dh)
        return jax.vmap(self.proj)(out.transpose(1, 0, 2).reshape(t, d))


class _Block(eqx.Module):
    """Pre-LN transformer block: `x + attn(LN(x))`, then `x + mlp(LN(x))` (GELU MLP)."""

    ln1: eqx.nn.LayerNorm
    attn: _Attention
    ln2: eqx.nn.LayerNorm
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear

    def __init__(self, d: int, heads: int, mlp_ratio: int, causal: bool, *, key, dtype=None):
        k1, k2, k3 = jr.split(key, 3)
        self.ln1 = eqx.nn.LayerNorm(d, dtype=dtype)
        self.attn = _Attention(d, heads, causal, key=k1, dtype=dtype)
        self.ln2 = eqx.nn.LayerNorm(d, dtype=dtype)
        self.fc1 = _lecun_linear(d, mlp_ratio * d, key=k2, dtype=dtype)
        self.fc2 = _lecun_linear(mlp_ratio * d, d, key=k3, dtype=dtype)

    def __call__(self, x: Float[Array, "t d"]) -> Float[Array, "t d"]:
        x = x + self.attn(jax.vmap(self.ln1)(x))
        h = jax.vmap(self.ln2)(x)
        return x + jax.vmap(lambda z: self.fc2(jax.nn.gelu(self.fc1(z))))(h)


class Transformer(eqx.Module):
    """A pre-LN decoder-only transformer (causal self-attention) for next-token prediction.

    Input: one sequence of integer token ids `(T,)` with `T <= max_len`. Output: logits
    `(T, vocab)`, row `t` predicting token `t + 1`. Token and learned position embeddings
    (N(0, 1)), `layers` pre-LN blocks (width `d`, `heads` heads, GELU MLP of width
    `mlp_ratio * d`), a final LayerNorm and a linear read-out (N(0, 1/d)). Tokens enter through a
    one-hot matrix product, so the forward pass is a smooth function of the parameters.
    """

    tok_emb: Float[Array, "v d"]
    pos_emb: Float[Array, "l d"]
    blocks: tuple[_Block, ...]
    ln_f: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, vocab: int, max_len: int, d: int = 32, layers: int = 2, heads: int = 4,
                 mlp_ratio: int = 2, *, key: PRNGKeyArray, dtype=None):
        dtype = dtype if dtype is not None else jnp.asarray(0.0).dtype
        keys = jr.split(key, layers + 3)
        self.tok_emb = jr.normal(keys[0], (vocab, d), dtype)
        self.pos_emb = jr.normal(keys[1], (max_len, d), dtype)
        self.blocks = tuple(_Block(d, heads, mlp_ratio, True, key=k, dtype=dtype)
                            for k in keys[3:])
        self.ln_f = eqx.nn.LayerNorm(d, dtype=dtype)
        self.head = _lecun_linear(d, vocab, key=keys[2], dtype=dtype)

    def __call__(self, tokens: Array) -> Float[Array, "t v"]:
        if tokens.ndim != 1:
            raise ValueError(f"Transformer takes one token sequence (T,), got shape {tokens.shape}; "
                             "use jax.vmap for a batch.")
        t = tokens.shape[0]
        onehot = jax.nn.one_hot(tokens, self.tok_emb.shape[0], dtype=self.tok_emb.dtype)
        x = onehot @ self.tok_emb + self.pos_emb[:t]
        for block in self.blocks:
            x = block(x)
        return jax.vmap(lambda z: self.head(self.ln_f(z)))(x)


class ViT(eqx.Module):
    """A tiny vision transformer: `patch x patch` patches -> linear tokens + learned positions ->
    pre-LN blocks with non-causal attention -> final LayerNorm -> mean over tokens -> linear head.

    Input: one image `(H, W, C)` (NHWC without the batch axis) with `H, W` divisible by `patch`.
    """

    embed: eqx.nn.Linear
    pos_emb: Float[Array, "n d"]
    blocks: tuple[_Block, ...]
    ln_f: eqx.nn.LayerNorm
    head: eqx.nn.Linear
    patch: int = eqx.field(static=True)

    def __init__(self, image_shape: tuple[int, int, int], out_size: int, patch: int = 2, d: int = 32,
                 layers: int = 2, heads: int = 4, mlp_ratio: int = 2, *, key: PRNGKeyArray,
                 dtype=None):
        dtype = dtype if dtype is not None else jnp.asarray(0.0).dtype
        h, w, c = image_shape
        if h % patch or w % patch:
            raise ValueError(f"ViT patch size {patch} must divide the image size {h}x{w}.")
        n_tok = (h // patch) * (w // patch)
        keys = jr.split(key, layers + 3)
        self.embed = _lecun_linear(patch * patch * c, d, key=keys[0], dtype=dtype)
        self.pos_emb = jr.normal(keys[1], (n_tok, d), dtype)
        self.blocks = tuple(_Block(d, heads, mlp_ratio, False, key=k, dtype=dtype)
                            for k in keys[3:])
        self.ln_f = eqx.nn.LayerNorm(d, dtype=dtype)
        self.head = _lecun_linear(d, out_size, key=keys[2], dtype=dtype)
        self.patch = patch

    def __call__(self, x: Array) -> Float[Array, " o"]:
        if x.ndim != 3:
            raise ValueError(f"ViT takes one (H, W, C) image, got shape {x.shape}; use jax.vmap.")
        h, w, c = x.shape
        p = self.patch
        patches = x.reshape(h // p, p, w // p, p, c).transpose(0, 2, 1, 3, 4).reshape(-1, p * p * c)
        z = jax.vmap(self.embed)(patches) + self.pos_emb
        for block in self.blocks:
            z = block(z)
        z = jax.vmap(self.ln_f)(z)
        return self.head(jnp.mean(z, axis=0))
