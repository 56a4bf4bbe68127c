"""Data sets for the built-in problems, all available offline.

- `digits_images`: sklearn digits as NHWC images `(n, 8, 8, 1)` with one-hot labels.
- `teacher_student`: Gaussian inputs and the outputs of a random teacher MLP.
- `sort_sequences`: short integer sequences followed by a separator and their sorted copy.
- `load_cifar10`: CIFAR-10 from the standard python-pickle layout on disk.

Everything returns numpy arrays (float64 for real-valued data); problems cast to the JAX dtype.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._digits import load_digits

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")


def digits_images(n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """First `n` sklearn digits as images `(n, 8, 8, 1)` in [0, 1] and one-hot targets `(n, 10)`."""
    x, y = load_digits(int(n))
    return x.reshape(-1, 8, 8, 1), y


def teacher_student(n: int = 256, d_in: int = 16, d_out: int = 4, teacher_width: int = 32,
                    noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Regression data from a random teacher: `x ~ N(0, I_d_in)`, `y = W2 tanh(W1 x) + noise`.

    Teacher weights are N(0, 1/fan_in) (so `y` is O(1)); `noise` is the std of added Gaussian
    label noise. Returns `x (n, d_in)`, `y (n, d_out)`, both float64, determined by `seed`.
    """
    if min(n, d_in, d_out, teacher_width) < 1:
        raise ValueError("teacher_student needs n, d_in, d_out, teacher_width >= 1.")
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((teacher_width, d_in)) / np.sqrt(d_in)
    w2 = rng.standard_normal((d_out, teacher_width)) / np.sqrt(teacher_width)
    x = rng.standard_normal((n, d_in))
    y = np.tanh(x @ w1.T) @ w2.T
    if noise:
        y = y + noise * rng.standard_normal(y.shape)
    return x, y


def sort_sequences(n: int = 256, length: int = 5, vocab: int = 8,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorting task as next-token prediction.

    Each sequence is `a_1 .. a_L, SEP, sort(a)_1 .. sort(a)_L` with `a_i` uniform in
    `0..vocab-1` and `SEP = vocab` (so the model's vocabulary has `vocab + 1` tokens).
    Returns `inputs (n, 2L)` (int32 token ids: the sequence without its last token),
    `targets (n, 2L, vocab+1)` (one-hot next tokens) and `mask (n, 2L)`: 1 on the `L` positions
    that predict the sorted half (the SEP position and after), 0 elsewhere.
    """
    if n < 1 or length < 1 or vocab < 2:
        raise ValueError("sort_sequences needs n >= 1, length >= 1, vocab >= 2.")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, vocab, size=(n, length))
    seq = np.concatenate([a, np.full((n, 1), vocab), np.sort(a, axis=1)], axis=1)
    inputs, nxt = seq[:, :-1].astype(np.int32), seq[:, 1:]
    targets = np.eye(vocab + 1)[nxt]
    mask = np.zeros(inputs.shape)
    mask[:, length:] = 1.0
    return inputs, targets, mask


# -- CIFAR-10 -----------------------------------------------------------------------------------
_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_FILES = ("test_batch",)


def _cifar_dir(data_dir) -> Path:
    if data_dir is None or str(data_dir) == "":
        raise ValueError("CIFAR-10 needs `data_dir`: the folder `cifar-10-batches-py` of the python "
                         "version (files data_batch_1..5, test_batch), or a folder containing it.")
    root = Path(data_dir).expanduser()
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise ValueError(f"CIFAR-10 directory {str(root)!r} does not exist; expected a folder with "
                         "the python-pickle files data_batch_1..data_batch_5 and test_batch.")
    return root


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise ValueError(f"CIFAR-10 file {path.name!r} not found: expected {str(path)!r} (the python "
                         "version's data_batch_1..data_batch_5 and test_batch).")
    try:
        with open(path, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"CIFAR-10 file {str(path)!r} is not a readable python pickle "
                         f"({type(e).__name__}); expected a dict with b'data' and b'labels'.") from e
    if not isinstance(d, dict):
        raise ValueError(f"CIFAR-10 file {str(path)!r} is malformed: expected a dict with b'data' and "
                         f"b'labels', got {type(d).__name__}.")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"CIFAR-10 file {str(path)!r} is malformed: expected keys b'data' (uint8, "
                         f"N x 3072) and b'labels', found {sorted(map(str, d))}.")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise ValueError(f"CIFAR-10 file {str(path)!r} is malformed: b'data' has shape {data.shape} "
                         f"(expected (N, 3072)) and b'labels' {labels.shape} (expected (N,)).")
    integral = labels.size == 0 or (np.issubdtype(labels.dtype, np.number)
                                    and np.all(labels == np.round(labels)))
    if not integral or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        lo, hi = (labels.min(), labels.max()) if labels.size else (None, None)
        raise ValueError(f"CIFAR-10 file {str(path)!r} is malformed: labels must be integers in 0..9, "
                         f"found values from {lo} to {hi}.")
    return data, labels.astype(np.int64)


def load_cifar10(data_dir, classes: Sequence[int | str] | None = None, n: int | None = None,
                 normalize: bool = True, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 images `(n, 32, 32, 3)` (NHWC, float64) and integer labels `(n,)`.

    - `data_dir`: the `cifar-10-batches-py` folder (or a folder containing it).
    - `classes`: optional subset (indices 0..9 or names such as `"cat"`); labels are then
      renumbered `0..len(classes)-1` in the given order.
    - `n`: keep the first `n` matching images (file order); `None` keeps all.
    - `normalize`: scale to [0, 1] then subtract the per-channel mean and divide by the
      per-channel std of the returned subset; otherwise values are in [0, 1].
    - `split`: `"train"` (data_batch_1..5) or `"test"` (test_batch).

    Raises `ValueError` naming the expected file and path when the folder or a file is missing
    or malformed, or when fewer than `n` images match.
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    root = _cifar_dir(data_dir)
    cls = None
    if classes is not None:
        cls = []
        for c in classes:
            if isinstance(c, str):
                if c not in CIFAR10_CLASSES:
                    raise ValueError(f"unknown CIFAR-10 class {c!r}; choose from {CIFAR10_CLASSES}.")
                c = CIFAR10_CLASSES.index(c)
            if not 0 <= int(c) < 10:
                raise ValueError(f"CIFAR-10 class indices are 0..9, got {c}.")
            cls.append(int(c))
        if len(set(cls)) != len(cls) or not cls:
            raise ValueError(f"`classes` must be a non-empty list of distinct classes, got {classes}.")
    if n is not None and int(n) < 1:
        raise ValueError(f"`n` must be a positive integer or None, got {n}.")
    xs, ys, have = [], [], 0
    for name in _TRAIN_FILES if split == "train" else _TEST_FILES:
        data, labels = _read_batch(root / name)
        if cls is not None:
            keep = np.isin(labels, cls)
            data, labels = data[keep], np.array([cls.index(int(lab)) for lab in labels[keep]], np.int64)
        xs.append(data)
        ys.append(labels)
        have += len(labels)
        if n is not None and have >= n:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    if n is not None:
        if len(y) < n:
            raise ValueError(f"CIFAR-10 in {str(root)!r} has only {len(y)} {split} images of the chosen "
                             f"classes, fewer than n={n}.")
        x, y = x[:n], y[:n]
    x = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float64) / 255.0
    if normalize:
        mean = x.mean(axis=(0, 1, 2))
        std = x.std(axis=(0, 1, 2))
        x = (x - mean) / np.where(std > 0, std, 1.0)
    return x, y
