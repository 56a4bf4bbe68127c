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


# The attention models live in their own file; importing them last keeps `models` their home.
from ._attention import Transformer as Transformer  # noqa: E402
from ._attention import ViT as ViT  # noqa: E402
