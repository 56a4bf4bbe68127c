"""More built-in problems: CNN / ResNet / ViT on the digits, a transformer on sorting, an MLP
teacher-student regression and CIFAR-10 (from a local copy).

Every factory documents a step size `lr` at which full-batch GD's sharpness crosses `2/lr`
within 3000 steps (measured with `rodflow.compare(..., flows=("discrete",))` at the default
options, float32); that value is the problem's `lr_hint`.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._problem import Problem
from . import _data
from ._init import dtype_independent
from ._losses import CrossEntropyLoss, MSELoss, default_dtype
from ._registry import register
from .models import CNN, MLP, ResNet, Transformer, ViT


def _classification_loss(kind: str, x, y_onehot, dtype):
    x = jnp.asarray(x, dtype)
    y = jnp.asarray(y_onehot, dtype)
    if kind == "mse":
        return MSELoss(x, y)
    if kind in ("ce", "xent", "cross-entropy"):
        return CrossEntropyLoss(x, y)
    raise ValueError(f"option `loss` must be 'mse' or 'ce', got {kind!r}.")


def _problem(name, loss, init, seed, lr_hint) -> Problem:
    return Problem(loss, init(jr.PRNGKey(int(seed))), name, lr_hint=lr_hint, init=init)


def _tuple(v, name) -> tuple[int, ...]:
    if isinstance(v, str):
        v = [s for s in v.replace(" ", "").split(",") if s]
    try:
        return tuple(int(a) for a in v)
    except (TypeError, ValueError) as e:
        raise ValueError(f"option `{name}` must be a list of integers, got {v!r}.") from e


# -- digits -------------------------------------------------------------------------------------
@register("cnn-digits")
def cnn_digits(n=256, width=32, hidden=32, activation="gelu", loss="mse", seed=0) -> Problem:
    """CNN (2 x [conv 3x3, GELU, avg-pool], 2 linear layers) on `n` sklearn digits as 8x8x1
    NHWC images, MSE on one-hot targets. GD reaches EoS at lr 0.2: measured (float32, defaults)
    sharpness 3.4 at init, first above 2/lr = 10 at step 60, hovering at 10-11 by step 600."""
    x, y = _data.digits_images(int(n))
    dtype = default_dtype()
    lossf = _classification_loss(loss, x, y, dtype)

    def build(key, dt):
        return CNN((8, 8, 1), 10, int(width), int(hidden), str(activation), key=key, dtype=dt)

    return _problem("cnn-digits", lossf, dtype_independent(build, dtype), seed, 0.2)


@register("resnet-digits")
def resnet_digits(n=256, widths=(8, 16, 32), blocks=1, res_scale=None, activation="gelu", loss="mse",
                  seed=0) -> Problem:
    """Small normalisation-free ResNet (3 stages, residual scale 1/sqrt(#blocks)) on `n` digits
    (8x8x1 NHWC), MSE on one-hot targets. GD reaches EoS at lr 0.15: measured (float32, defaults)
    sharpness 9.3 at init, 7.3 at step 20, first above 2/lr = 13.3 at step 160, then oscillating
    between about 8 and 28 (a rough EoS phase) while the loss keeps falling."""
    x, y = _data.digits_images(int(n))
    dtype = default_dtype()
    lossf = _classification_loss(loss, x, y, dtype)
    ws = _tuple(widths, "widths")
    rs = None if res_scale is None else float(res_scale)

    def build(key, dt):
        return ResNet((8, 8, 1), 10, ws, int(blocks), str(activation), rs, key=key, dtype=dt)

    return _problem("resnet-digits", lossf, dtype_independent(build, dtype), seed, 0.15)


@register("vit-digits")
def vit_digits(n=256, patch=2, d=32, layers=2, heads=4, mlp_ratio=2, loss="mse", seed=0) -> Problem:
    """Tiny ViT (2x2 patches -> 16 tokens, pre-LN, non-causal attention, mean-pool, linear head)
    on `n` digits (8x8x1 NHWC), MSE on one-hot targets. GD reaches EoS at lr 0.02: measured
    (float32, defaults) sharpness 73 at init, 67 at step 60, then progressive sharpening across
    2/lr = 100 at step 360."""
    x, y = _data.digits_images(int(n))
    dtype = default_dtype()
    lossf = _classification_loss(loss, x, y, dtype)

    def build(key, dt):
        return ViT((8, 8, 1), 10, int(patch), int(d), int(layers), int(heads), int(mlp_ratio),
                   key=key, dtype=dt)

    return _problem("vit-digits", lossf, dtype_independent(build, dtype), seed, 0.02)


# -- synthetic ----------------------------------------------------------------------------------
@register("transformer-sort")
def transformer_sort(n=256, length=5, vocab=8, d=32, layers=2, heads=4, mlp_ratio=2, seed=0,
                     data_seed=0) -> Problem:
    """Pre-LN causal transformer learning to sort `n` sequences of `length` tokens from `vocab`
    symbols: next-token cross-entropy on the sorted half (mean over predicted tokens).
    GD reaches EoS at lr 0.3: measured (float32, defaults) sharpness 5.1 at init, above
    2/lr = 6.7 from step 20 to about 140; as the cross-entropy goes to 0 the sharpness then falls
    (1.8 at step 400), so the EoS phase is early and transient."""
    inputs, targets, mask = _data.sort_sequences(int(n), int(length), int(vocab), int(data_seed))
    dtype = default_dtype()
    lossf = CrossEntropyLoss(jnp.asarray(inputs), jnp.asarray(targets, dtype), jnp.asarray(mask, dtype))

    def build(key, dt):
        return Transformer(int(vocab) + 1, 2 * int(length), int(d), int(layers), int(heads),
                           int(mlp_ratio), key=key, dtype=dt)

    return _problem("transformer-sort", lossf, dtype_independent(build, dtype), seed, 0.3)


@register("mlp-teacher")
def mlp_teacher(n=256, d_in=16, d_out=4, teacher_width=32, width=64, depth=2, activation="tanh",
                noise=0.0, seed=0, data_seed=0) -> Problem:
    """Student MLP (`width` x `depth`, tanh) regressing a random tanh teacher on `n` Gaussian
    inputs, MSE. GD reaches EoS at lr 0.38: measured (float32, defaults) sharpness 5.15 at init,
    dips to 4.6, crosses 2/lr = 5.26 at step 280 and hovers at 5.3 through step 1500."""
    x, y = _data.teacher_student(int(n), int(d_in), int(d_out), int(teacher_width), float(noise),
                                 int(data_seed))
    dtype = default_dtype()
    lossf = MSELoss(jnp.asarray(x, dtype), jnp.asarray(y, dtype))

    def build(key, dt):
        return MLP(int(d_in), int(d_out), int(width), int(depth), str(activation), key=key, dtype=dt)

    return _problem("mlp-teacher", lossf, dtype_independent(build, dtype), seed, 0.38)


# -- CIFAR-10 (local files) ---------------------------------------------------------------------
def _cifar(data_dir, classes, n, problem):
    if data_dir is None:
        raise ValueError(f"problem {problem!r} needs option `data_dir`: the CIFAR-10 python folder "
                         "`cifar-10-batches-py` (data_batch_1..5, test_batch) or a folder containing "
                         "it; there is no download.")
    cls = None if classes is None else (
        [c for c in classes.replace(" ", "").split(",") if c] if isinstance(classes, str) else list(classes))
    if cls is not None:
        cls = [int(c) if isinstance(c, str) and c.isdigit() else c for c in cls]
    x, labels = _data.load_cifar10(data_dir, cls, int(n), normalize=True)
    k = 10 if cls is None else len(cls)
    return x, np.eye(k)[labels], k


@register("mlp-cifar10")
def mlp_cifar10(data_dir=None, n=500, classes=None, width=32, depth=2, activation="tanh", loss="mse",
                seed=0) -> Problem:
    """MLP on `n` flattened, per-channel normalised CIFAR-10 images (optionally a class subset,
    e.g. `classes="3,5"`), MSE on one-hot targets. `data_dir` is required (local copy of the python
    version). Suggested lr 0.02 (not measured here: no CIFAR data offline)."""
    x, y, k = _cifar(data_dir, classes, n, "mlp-cifar10")
    dtype = default_dtype()
    lossf = _classification_loss(loss, x.reshape(len(x), -1), y, dtype)

    def build(key, dt):
        return MLP(3072, k, int(width), int(depth), str(activation), key=key, dtype=dt)

    return _problem("mlp-cifar10", lossf, dtype_independent(build, dtype), seed, 0.02)


@register("cnn-cifar10")
def cnn_cifar10(data_dir=None, n=500, classes=None, width=16, hidden=32, activation="gelu", loss="mse",
                seed=0) -> Problem:
    """CNN (2 x [conv 3x3, GELU, avg-pool], 2 linear layers) on `n` per-channel normalised
    CIFAR-10 images (32x32x3 NHWC), MSE on one-hot targets. `data_dir` is required.
    Suggested lr 0.02 (not measured here: no CIFAR data offline)."""
    x, y, k = _cifar(data_dir, classes, n, "cnn-cifar10")
    dtype = default_dtype()
    lossf = _classification_loss(loss, x, y, dtype)

    def build(key, dt):
        return CNN((32, 32, 3), k, int(width), int(hidden), str(activation), key=key, dtype=dt)

    return _problem("cnn-cifar10", lossf, dtype_independent(build, dtype), seed, 0.02)
