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


# -- convolutional networks ----------------------------------------------------------------------
# Image models take ONE image in NHWC layout without the batch axis, i.e. shape (H, W, C)
# (sklearn digits: (8, 8, 1); CIFAR-10: (32, 32, 3)); `jax.vmap` adds the batch axis.


class Conv2d(eqx.Module):
    """A stride-1 'same' convolution on one `(C, H, W)` image, written as shifted slices and one
    `einsum` (no `conv` primitive): XLA on CPU runs this far faster inside `lax.scan` than its
    convolution kernels, and all derivatives stay exact. Weight layout `(out, in, k, k)` as in
    `eqx.nn.Conv2d`; weights N(0, 1/fan_in) with `fan_in = in * k * k`, bias 0.
    """

    weight: Float[Array, "o i k k"]
    bias: Float[Array, " o"]

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, *, key: PRNGKeyArray, dtype=None):
        if kernel % 2 != 1:
            raise ValueError(f"Conv2d needs an odd kernel size, got {kernel}.")
        dtype = dtype if dtype is not None else jnp.asarray(0.0).dtype
        self.weight = jr.normal(key, (out_ch, in_ch, kernel, kernel), dtype) / jnp.sqrt(
            in_ch * kernel * kernel)
        self.bias = jnp.zeros((out_ch,), dtype)

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, "o h w"]:
        k = self.weight.shape[-1]
        if k == 1:
            return jnp.einsum("oc,chw->ohw", self.weight[:, :, 0, 0], x) + self.bias[:, None, None]
        c, h, w = x.shape
        p = k // 2
        xp = jnp.pad(x, ((0, 0), (p, p), (p, p)))
        patches = jnp.stack([jnp.stack([xp[:, i:i + h, j:j + w] for j in range(k)], axis=1)
                             for i in range(k)], axis=1)  # (c, k, k, h, w)
        return jnp.einsum("ocij,cijhw->ohw", self.weight, patches) + self.bias[:, None, None]


def _lecun_conv(in_ch: int, out_ch: int, kernel: int, *, key: PRNGKeyArray, dtype=None) -> Conv2d:
    """A `kernel x kernel` 'same' convolution with weights N(0, 1/fan_in); bias 0."""
    return Conv2d(in_ch, out_ch, kernel, key=key, dtype=dtype)


def _avg_pool2(x: Float[Array, "c h w"]) -> Float[Array, "c h2 w2"]:
    """2x2 average pooling with stride 2 (a linear map; odd trailing rows/columns are dropped)."""
    c, h, w = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def _to_chw(x: Array) -> Float[Array, "c h w"]:
    if x.ndim != 3:
        raise ValueError(f"image models take one (H, W, C) image, got shape {x.shape}; "
                         "use jax.vmap for a batch.")
    return jnp.transpose(x, (2, 0, 1))


class CNN(eqx.Module):
    """Two stages `conv 3x3 -> act -> 2x2 average pool`, then `linear -> act -> linear`.

    Input: one image `(H, W, C)` (NHWC without the batch axis). Output: `(out_size,)` logits.
    Weights N(0, 1/fan_in), biases 0. Default: width 32, GELU, hidden 32.
    """

    convs: tuple[Conv2d, ...]
    hidden: eqx.nn.Linear
    head: eqx.nn.Linear
    act: str = eqx.field(static=True)

    def __init__(self, image_shape: tuple[int, int, int], out_size: int, width: int = 32,
                 hidden: int = 32, act: str = "gelu", *, key: PRNGKeyArray, dtype=None):
        activation(act)
        h, w, c = image_shape
        k1, k2, k3, k4 = jr.split(key, 4)
        self.convs = (_lecun_conv(c, width, 3, key=k1, dtype=dtype),
                      _lecun_conv(width, width, 3, key=k2, dtype=dtype))
        flat = width * (h // 4) * (w // 4)
        if flat == 0:
            raise ValueError(f"CNN needs images of at least 4x4, got {image_shape}.")
        self.hidden = _lecun_linear(flat, hidden, key=k3, dtype=dtype)
        self.head = _lecun_linear(hidden, out_size, key=k4, dtype=dtype)
        self.act = act

    def __call__(self, x: Array) -> Float[Array, " o"]:
        f = activation(self.act)
        x = _to_chw(x)
        for conv in self.convs:
            x = _avg_pool2(f(conv(x)))
        return self.head(f(self.hidden(x.reshape(-1))))


class _ResBlock(eqx.Module):
    conv1: Conv2d
    conv2: Conv2d

    def __init__(self, ch: int, *, key, dtype=None):
        k1, k2 = jr.split(key)
        self.conv1 = _lecun_conv(ch, ch, 3, key=k1, dtype=dtype)
        self.conv2 = _lecun_conv(ch, ch, 3, key=k2, dtype=dtype)

    def __call__(self, x, f):
        return self.conv2(f(self.conv1(f(x))))


class ResNet(eqx.Module):
    """A small pre-activation ResNet without normalisation layers.

    `stem conv 3x3 -> stage 1 -> [pool 2x2, 1x1 conv] -> stage 2 -> [pool, 1x1] -> stage 3 ->
    act -> global average pool -> linear`. Each stage has `blocks` residual blocks
    `x + alpha * conv(act(conv(act(x))))` with `alpha = res_scale`, default `1/sqrt(#blocks)`
    (no BatchNorm: the scaling keeps the residual stream O(1) at init).
    Input: one image `(H, W, C)` (NHWC without the batch axis). Weights N(0, 1/fan_in).
    """

    stem: Conv2d
    stages: tuple[tuple[_ResBlock, ...], ...]
    transitions: tuple[Conv2d, ...]
    head: eqx.nn.Linear
    alpha: float = eqx.field(static=True)
    act: str = eqx.field(static=True)

    def __init__(self, image_shape: tuple[int, int, int], out_size: int,
                 widths: tuple[int, int, int] = (8, 16, 32), blocks: int = 1, act: str = "gelu",
                 res_scale: float | None = None, *, key: PRNGKeyArray, dtype=None):
        activation(act)
        if len(widths) != 3 or blocks < 1:
            raise ValueError(f"ResNet needs 3 stage widths and blocks >= 1, got {widths}, {blocks}.")
        c = image_shape[-1]
        keys = iter(jr.split(key, 3 * blocks + 4))
        self.stem = _lecun_conv(c, widths[0], 3, key=next(keys), dtype=dtype)
        self.stages = tuple(tuple(_ResBlock(w, key=next(keys), dtype=dtype) for _ in range(blocks))
                            for w in widths)
        self.transitions = tuple(_lecun_conv(a, b, 1, key=next(keys), dtype=dtype)
                                 for a, b in zip(widths[:-1], widths[1:]))
        self.head = _lecun_linear(widths[-1], out_size, key=next(keys), dtype=dtype)
        self.alpha = float(res_scale) if res_scale is not None else 1.0 / (3 * blocks) ** 0.5
        self.act = act

    def __call__(self, x: Array) -> Float[Array, " o"]:
        f = activation(self.act)
        x = self.stem(_to_chw(x))
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.transitions[i - 1](_avg_pool2(x))
            for block in stage:
                x = x + self.alpha * block(x, f)
        return self.head(jnp.mean(f(x), axis=(1, 2)))


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
