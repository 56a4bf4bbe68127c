"""Files: metrics JSON, series npz, figures and chunk checkpoints for resumable runs.

Every file is written atomically: into a temporary file in the same folder, flushed to disk,
then renamed over the target; a failed write removes its temporary file and leaves the previous
file as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import jax
import numpy as np


# What a run folder holds; `prepare_out` refuses a folder with any of these unless asked.
class CheckpointError(ValueError):
    """A checkpoint that cannot continue this run (one-line message naming the file)."""


RUN_FILES = ("metrics.json", "series.npz", "params.npz", "compare.png", "sweep.json", "runs.json",
             "sweep.png", "checkpoint.npz")
# The records of every chunk so far, one file per chunk, beside `checkpoint.npz` (which holds the
# settings, the carries and how many chunks are done): a checkpoint appends one file per chunk
# instead of rewriting everything recorded so far.
CHUNKS_DIR = "checkpoint.chunks"


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


@contextlib.contextmanager
def atomic(path: str | Path, mode: str = "wb"):
    """Open a temporary file beside `path` for writing; on success it replaces `path` (after an
    fsync), on any failure it is removed and `path` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically; non-finite floats become `null`."""
    with atomic(path, "w") as f:
        f.write(json.dumps(_clean(obj), indent=2) + "\n")


def write_series(path: str | Path, series: dict[str, dict[str, np.ndarray]]) -> None:
    """`{run: {key: array}}` into one compressed npz, as `"run/key"` entries (the run label may
    hold a `/`, the key may not)."""
    flat = {f"{run}/{key}": np.asarray(v) for run, d in series.items() for key, v in d.items()}
    with atomic(path) as f:
        np.savez_compressed(f, **flat)


def write_figure(path: str | Path, fig) -> None:
    with atomic(path) as f:
        fig.savefig(f, dpi=110, format=Path(path).suffix.lstrip(".") or "png")


def read_series(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of `write_series` (runs in the order they were written)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as z:
        for k in z.files:
            run, key = k.rsplit("/", 1)
            out.setdefault(run, {})[key] = z[k]
    return out


def digest(*arrays) -> str:
    """A short hash of the bytes of some arrays (initial parameters, data)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.shape, a.dtype)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _canonical(config) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def prepare_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check, before anything is computed, that `out` is a writable folder that holds no earlier
    run (unless `resume` continues it or `overwrite` replaces it; `overwrite` removes its files)."""
    if resume and overwrite:
        raise ValueError("`resume` and `overwrite` exclude each other: continue the run in `out`, "
                         "or replace it.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` ({out}) is a file, not a folder; give a folder path.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        reason = e.strerror or e
        raise ValueError(f"`out` ({out}) is not a writable folder ({reason}); give another path.") from e
    for stale in [*out.glob(".*.tmp"), *(out / CHUNKS_DIR).glob(".*.tmp")]:  # a process killed mid-write
        if stale.parent.name == CHUNKS_DIR or any(stale.name.startswith(f".{name}.") for name in RUN_FILES):
            stale.unlink()
    found = [name for name in (*RUN_FILES, CHUNKS_DIR) if (out / name).exists()]
    if found and overwrite:
        for name in found:
            if name == CHUNKS_DIR:
                shutil.rmtree(out / name)
            else:
                (out / name).unlink()
    elif found and not (resume and "checkpoint.npz" in found):
        raise ValueError(f"`out` ({out}) already holds a run ({', '.join(found)}); pass resume=True "
                         "(--resume) to continue it or overwrite=True (--overwrite) to replace it.")


def _chunk_file(path: Path, i: int) -> Path:
    return path.parent / CHUNKS_DIR / f"{i:06d}.npz"


def save_checkpoint(path: Path, config: dict, next_chunk: int, carries, records, blocks) -> None:
    """Everything needed to continue a run after chunk `next_chunk - 1`, written atomically;
    `config` is every setting that changes a number (compared on resume).

    The records of chunk `next_chunk - 1` (and of any earlier chunk whose file is missing) go
    into their own file under `checkpoint.chunks/`, written before `path`, which holds the
    settings, the carries and `next_chunk`: a checkpoint costs one chunk's records, not all of
    them, and `path` never names a chunk whose file is not complete."""
    (path.parent / CHUNKS_DIR).mkdir(exist_ok=True)
    for i in range(next_chunk):
        chunk_path = _chunk_file(path, i)
        if i < next_chunk - 1 and chunk_path.exists():
            continue
        arrays = {}
        for kind, src in (("rec", records), ("blk", blocks)):
            for name, chunks in src.items():
                for key, value in chunks[i].items():
                    arrays[f"{kind}/{name}/{key}"] = np.asarray(value)
        with atomic(chunk_path) as f:
            np.savez(f, **arrays)
    arrays = {"__config__": np.asarray(_canonical(config)), "__next_chunk__": np.asarray(next_chunk)}
    for name, carry in carries.items():
        for i, leaf in enumerate(jax.tree.leaves(carry)):
            arrays[f"carry/{name}/{i}"] = np.asarray(leaf)
    with atomic(path) as f:
        np.savez(f, **arrays)


def _mismatch(saved: dict, config: dict) -> str:
    keys = sorted(set(saved) | set(config))
    diff = [k for k in keys if _canonical(saved.get(k)) != _canonical(config.get(k))]
    return "; ".join(f"{k}: {_short(saved.get(k))} in the checkpoint, {_short(config.get(k))} now"
                     for k in diff)


def _short(v) -> str:
    text = _canonical(v)
    return text if len(text) <= 60 else text[:57] + "..."


def load_checkpoint(path: Path, config: dict, template_carries):
    """Inverse of `save_checkpoint`; refuses a checkpoint written with other settings (naming
    them) and an unreadable one."""
    try:
        with np.load(path) as z:
            return _read_checkpoint(z, path, config, template_carries)
    except CheckpointError:
        raise
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {first}); delete it, "
                              "or pass overwrite=True (--overwrite) to start the run again.") from e


def _read_checkpoint(z, path, config, template_carries):
    if "__config__" not in z.files:
        raise CheckpointError(f"checkpoint {path} was written by an older rodflow; pass overwrite=True "
                         "(--overwrite) to start the run again.")
    saved = json.loads(str(z["__config__"]))
    if _canonical(saved) != _canonical(json.loads(_canonical(config))):
        raise CheckpointError(f"checkpoint {path} was written by a run with different settings "
                         f"({_mismatch(saved, json.loads(_canonical(config)))}); use the same "
                         "arguments, or overwrite=True (--overwrite) to start again.")
    next_chunk = int(z["__next_chunk__"])
    carries = {}
    for name, tmpl in template_carries.items():
        leaves, treedef = jax.tree.flatten(tmpl)
        new = [np.asarray(z[f"carry/{name}/{i}"]).astype(np.asarray(leaf).dtype)
               for i, leaf in enumerate(leaves)]
        carries[name] = jax.tree.unflatten(treedef, [jax.numpy.asarray(a) for a in new])
    records = {name: [] for name in template_carries}
    blocks = {name: [] for name in template_carries}
    for i in range(next_chunk):
        for target in (records, blocks):
            for name in target:
                target[name].append({})
        with np.load(_chunk_file(path, i)) as c:
            for k in c.files:
                kind, name, key = k.split("/", 2)
                (records if kind == "rec" else blocks)[name][i][key] = c[k]
    return next_chunk, carries, records, blocks
