"""Files: metrics JSON, series npz, and chunk checkpoints for resumable runs."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import jax
import numpy as np


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if hasattr(obj, "shape") and getattr(obj, "shape", None) == ():
        return _clean(np.asarray(obj).item())
    return obj


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically; non-finite floats become `null`."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2) + "\n")
    os.replace(tmp, path)


def write_series(path: str | Path, series: dict[str, dict[str, np.ndarray]]) -> None:
    flat = {f"{run}/{key}": np.asarray(v) for run, d in series.items() for key, v in d.items()}
    np.savez_compressed(path, **flat)


def read_series(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as z:
        for k in z.files:
            run, key = k.split("/", 1)
            out.setdefault(run, {})[key] = z[k]
    return out


def fingerprint(**config) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(path: Path, fp: str, next_chunk: int, carries, records, blocks) -> None:
    """Everything needed to continue a run after chunk `next_chunk - 1`, written atomically."""
    arrays = {"__fingerprint__": np.asarray(fp), "__next_chunk__": np.asarray(next_chunk)}
    for name, carry in carries.items():
        for i, leaf in enumerate(jax.tree.leaves(carry)):
            arrays[f"carry/{name}/{i}"] = np.asarray(leaf)
    for kind, src in (("rec", records), ("blk", blocks)):
        for name, chunks in src.items():
            for i, chunk in enumerate(chunks):
                for key, value in chunk.items():
                    arrays[f"{kind}/{name}/{i}/{key}"] = np.asarray(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path: Path, fp: str, template_carries):
    """Inverse of `save_checkpoint`; refuses a checkpoint written with other settings."""
    with np.load(path) as z:
        if str(z["__fingerprint__"]) != fp:
            raise ValueError(
                f"checkpoint {path} was written by a run with different settings (problem, lr, "
                "steps, flows, chunk or dtype); use the same arguments, or a fresh `out` directory."
            )
        next_chunk = int(z["__next_chunk__"])
        carries = {}
        for name, tmpl in template_carries.items():
            leaves, treedef = jax.tree.flatten(tmpl)
            new = [np.asarray(z[f"carry/{name}/{i}"]).astype(np.asarray(leaf).dtype)
                   for i, leaf in enumerate(leaves)]
            carries[name] = jax.tree.unflatten(treedef, [jax.numpy.asarray(a) for a in new])
        records = {name: [] for name in template_carries}
        blocks = {name: [] for name in template_carries}
        for k in z.files:
            if k.startswith(("rec/", "blk/")):
                kind, name, i, key = k.split("/", 3)
                target = records if kind == "rec" else blocks
                while len(target[name]) <= int(i):
                    target[name].append({})
                target[name][int(i)][key] = z[k]
    return next_chunk, carries, records, blocks
