"""Models, data and losses of the built-in problems (issue 3): exact derivatives, batching,
the CIFAR-10 loader, and that every new problem builds by name."""

from __future__ import annotations

import pickle

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import rodflow.problems as P
from rodflow._derivatives import hvp, rod_curvature, rod_curvature_grad
from rodflow.problems import _data
from rodflow.problems._losses import CrossEntropyLoss
from rodflow.problems.models import CNN, MLP, ResNet, Transformer, ViT


@pytest.fixture(autouse=True, scope="module")
def _x64():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


# Small versions of every model, built through the registry (so `loss_flat` is what is tested).
SMALL = {
    "mlp-teacher": dict(n=8, d_in=4, d_out=2, teacher_width=4, width=6),
    "cnn-digits": dict(n=6, width=3, hidden=5),
    "resnet-digits": dict(n=3, widths="2,2,3"),
    "vit-digits": dict(n=4, patch=4, d=8, heads=2, layers=1),
    "transformer-sort": dict(n=4, length=2, vocab=3, d=8, heads=2, layers=1),
    "cnn-digits-ce": dict(n=6, width=3, hidden=5, loss="ce"),
}


def _small(name):
    return P.get(name.removesuffix("-ce"), **SMALL[name])


# the three largest take 45-66 s each (measured on a loaded 2-core CPU): run with -m slow (the other
# families, and every model's own HVP through the engine's tests, stay in the default suite)
_SLOW_FD = {"resnet-digits", "transformer-sort", "vit-digits"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_FD else n
                                  for n in SMALL])
def test_hvp_and_rod_curvature_grad_match_finite_differences(name):
    prob = _small(name)
    f = prob.loss_flat
    x = prob.x0
    assert x.dtype == jnp.float64
    k1, k2, k3 = jr.split(jr.PRNGKey(3), 3)
    x = x + 0.1 * jr.normal(k3, x.shape, x.dtype) / jnp.sqrt(x.size)  # off the symmetric init
    v = jr.normal(k1, x.shape, x.dtype)
    v = v / jnp.linalg.norm(v)
    u = jr.normal(k2, x.shape, x.dtype)
    u = u / jnp.linalg.norm(u)
    eps = 1e-5

    @jax.jit
    def everything(x, v, u):  # one compilation per model
        grad = jax.grad(f)
        kappa = lambda y: rod_curvature(f, y, v)
        Hv = hvp(f, x, v)
        fd = (grad(x + eps * v) - grad(x - eps * v)) / (2 * eps)
        gk = rod_curvature_grad(f, x, v)
        dirs = jnp.stack([u, gk / jnp.linalg.norm(gk)])
        exact = dirs @ gk
        fd_k = jax.vmap(lambda d: (kappa(x + eps * d) - kappa(x - eps * d)) / (2 * eps))(dirs)
        return Hv, fd, exact, fd_k

    Hv, fd, exact, fd_k = everything(x, v, u)
    assert jnp.linalg.norm(Hv - fd) / jnp.linalg.norm(Hv) < 1e-5
    assert jnp.all(jnp.abs(exact - fd_k) / (jnp.abs(exact) + 1e-12) < 1e-5), (name, exact, fd_k)


def _models(key):
    ks = jr.split(key, 5)
    img = jr.normal(ks[4], (3, 8, 8, 1))
    toks = jnp.array([[0, 1, 2, 3, 4, 0], [4, 3, 2, 1, 0, 1], [1, 1, 1, 2, 2, 2]])
    return [
        (MLP(64, 10, 8, 2, key=ks[0]), img.reshape(3, -1)),
        (CNN((8, 8, 1), 10, 4, 8, key=ks[0]), img),
        (ResNet((8, 8, 1), 10, (2, 3, 4), 2, key=ks[1]), img),
        (ViT((8, 8, 1), 10, patch=2, d=8, heads=2, key=ks[2]), img),
        (Transformer(5, 8, d=8, heads=2, key=ks[3]), toks),
    ]


def test_models_unbatched_and_under_vmap():
    for model, xs in _models(jr.PRNGKey(0)):
        single = jnp.stack([eqx.filter_jit(model)(x) for x in xs])
        batched = eqx.filter_jit(eqx.filter_vmap(model))(xs)
        assert batched.shape == single.shape
        assert jnp.allclose(single, batched, rtol=1e-10, atol=1e-10), type(model).__name__
        assert jnp.all(jnp.isfinite(batched))
        leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
        assert all(leaf.dtype == jnp.float64 for leaf in leaves)


def test_model_shapes_errors_and_init_scale():
    key = jr.PRNGKey(1)
    cnn = CNN((32, 32, 3), 4, 4, 8, key=key)
    assert cnn(jnp.zeros((32, 32, 3))).shape == (4,)
    with pytest.raises(ValueError, match="one"):
        cnn(jnp.zeros((2, 32, 32, 3)))
    with pytest.raises(ValueError, match="patch"):
        ViT((8, 8, 1), 10, patch=3, key=key)
    with pytest.raises(ValueError, match="divisible"):
        Transformer(5, 8, d=10, heads=4, key=key)
    # N(0, 1/fan_in) weights: the second conv has fan_in 3*3*width
    w = np.asarray(CNN((8, 8, 1), 10, 32, 8, key=key).convs[1].weight)
    assert abs(w.std() * np.sqrt(9 * 32) - 1) < 0.05
    assert float(ResNet((8, 8, 1), 10, key=key).alpha) == pytest.approx(1 / np.sqrt(3))


def test_transformer_is_causal():
    model = Transformer(6, 8, d=8, heads=2, key=jr.PRNGKey(2))
    a = jnp.array([0, 1, 2, 3, 4, 5])
    b = a.at[4].set(0)
    la, lb = model(a), model(b)
    assert jnp.allclose(la[:4], lb[:4], atol=1e-12)
    assert not jnp.allclose(la[4:], lb[4:])


def test_synthetic_data():
    x, y = _data.digits_images(20)
    assert x.shape == (20, 8, 8, 1) and y.shape == (20, 10) and 0 <= x.min() and x.max() <= 1
    x1, y1 = _data.teacher_student(10, 3, 2, 5, seed=4)
    x2, y2 = _data.teacher_student(10, 3, 2, 5, seed=4)
    assert x1.shape == (10, 3) and y1.shape == (10, 2)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(y1, _data.teacher_student(10, 3, 2, 5, seed=5)[1])
    inputs, targets, mask = _data.sort_sequences(7, length=4, vocab=5, seed=1)
    assert inputs.shape == (7, 8) and targets.shape == (7, 8, 6) and mask.shape == (7, 8)
    nxt = targets.argmax(-1)
    assert np.all(inputs[:, 4] == 5)  # separator
    assert np.array_equal(nxt[:, 4:], np.sort(inputs[:, :4], axis=1))
    assert np.array_equal(inputs[:, 5:], nxt[:, 4:7])
    assert mask[:, :4].sum() == 0 and mask[:, 4:].min() == 1


def test_cross_entropy_loss_means():
    model = lambda x: x  # logits = inputs
    logits = jnp.array([[0.0, 0.0], [jnp.log(3.0), 0.0]])
    y = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    expected = (np.log(2) + np.log(4 / 3)) / 2
    assert float(CrossEntropyLoss(logits, y)(model)) == pytest.approx(expected)
    seq = jnp.stack([logits, logits])  # (n=2, T=2, V=2)
    ys = jnp.stack([y, y])
    mask = jnp.array([[0.0, 1.0], [0.0, 1.0]])  # only the second token counts
    assert float(CrossEntropyLoss(seq, ys, mask)(model)) == pytest.approx(np.log(4 / 3))


# -- CIFAR-10 loader on generated files -----------------------------------------------------------
def _write_cifar(root, per_file=12, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        data[:, :1024] //= 2  # channels with different means
        labels = list(rng.integers(0, 10, size=per_file))
        labels[:3] = [3, 5, 3]
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, fh)
    return root


def test_cifar10_loader(tmp_path):
    root = _write_cifar(tmp_path / "cifar-10-batches-py")
    x, y = _data.load_cifar10(tmp_path)  # the parent folder works too
    assert x.shape == (60, 32, 32, 3) and y.shape == (60,)
    assert np.allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-8)
    assert np.allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-8)
    raw, _ = _data.load_cifar10(root, normalize=False)
    assert 0 <= raw.min() and raw.max() <= 1 and raw[..., 0].mean() < raw[..., 1].mean()
    # NHWC: pixel (0, 0) channel c is byte c*1024 of the row
    with open(root / "data_batch_1", "rb") as fh:
        first = pickle.load(fh, encoding="bytes")[b"data"][0]
    assert np.allclose(raw[0, 0, 0], first[[0, 1024, 2048]] / 255.0)
    xs, ys = _data.load_cifar10(root, classes=["dog", 3], n=5)
    assert xs.shape == (5, 32, 32, 3) and set(ys) <= {0, 1}
    assert list(ys[:3]) == [1, 0, 1]  # 3 -> cat -> index 1, 5 -> dog -> index 0
    assert np.allclose(xs.mean(axis=(0, 1, 2)), 0, atol=1e-8)
    xt, _ = _data.load_cifar10(root, split="test")
    assert xt.shape == (12, 32, 32, 3)


def test_cifar10_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="data_batch_1"):
        _data.load_cifar10(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="data_dir"):
        _data.load_cifar10(None)
    root = _write_cifar(tmp_path / "c", per_file=4)
    (root / "data_batch_2").unlink()
    _data.load_cifar10(root, n=3)  # only data_batch_1 is needed
    with pytest.raises(ValueError, match="data_batch_2.*expected"):
        _data.load_cifar10(root)
    (root / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_2.*pickle"):
        _data.load_cifar10(root)
    with open(root / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, fh)
    with pytest.raises(ValueError, match="3072"):
        _data.load_cifar10(root)
    with open(root / "data_batch_2", "wb") as fh:
        pickle.dump({b"pixels": 1}, fh)
    with pytest.raises(ValueError, match="labels"):
        _data.load_cifar10(root)
    with pytest.raises(ValueError, match="fewer than n"):
        _data.load_cifar10(_write_cifar(tmp_path / "d", per_file=3), n=1000)
    with pytest.raises(ValueError, match="class"):
        _data.load_cifar10(root, classes=["unicorn"])


@pytest.mark.parametrize("name", ["mlp-cifar10", "cnn-cifar10"])
def test_cifar_problems(tmp_path, name):
    root = _write_cifar(tmp_path / "cifar-10-batches-py", per_file=10)
    with pytest.raises(ValueError, match="data_dir"):
        P.get(name)
    prob = P.get(name, data_dir=str(root), n=12, classes="3,5", width=4)
    loss = prob.loss_flat(prob.x0)
    assert loss.shape == () and jnp.isfinite(loss)
    assert prob.lr_hint is not None and prob.name == name


NEW = ["cnn-digits", "resnet-digits", "vit-digits", "transformer-sort", "mlp-teacher"]


@pytest.mark.parametrize("name", NEW)
def test_new_problems_build_by_name(name):
    assert name in P.available()
    prob = P.get(name, n=32)
    loss = eqx.filter_jit(lambda p, x: p.loss_flat(x))(prob, prob.x0)
    assert loss.shape == () and jnp.isfinite(loss) and loss.dtype == jnp.float64
    assert prob.lr_hint is not None and prob.lr_hint > 0
    assert prob.init is not None
    other = prob.init(jr.PRNGKey(1))
    assert prob.ravel(other).shape == prob.x0.shape
    assert f"{prob.lr_hint:g}" in P._registry._lookup(name).__doc__
