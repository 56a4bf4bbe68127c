"""Keyed benchmark results: one JSON file per script, entries added under a key, the file
stamped with the software and machine of its last write (`cost.py`, `central_settings.py`,
`compile_times.py`), and the revision of the `rodflow` measured."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def rodflow_revision(short: bool = False) -> tuple[str | None, bool]:
    """`(commit, modified)` of the `rodflow` that is imported (a `git worktree` of another commit
    on `PYTHONPATH` is measured as that commit): its checkout's `HEAD` (`None` outside git) and
    whether files under its package directory differ from it or are untracked."""
    import subprocess

    import rodflow

    src = Path(rodflow.__file__).parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", *(["--short"] if short else []), "HEAD"],
                              capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None, False
    return head.stdout.strip() or None, bool(status.stdout.strip())


def load_results(out: Path, section: str) -> dict:
    """The results already in `out` (an empty `section` if there are none)."""
    return json.loads(out.read_text()) if out.exists() else {section: {}}


def save_entry(out: Path, results: dict, section: str, key: str, entry: dict) -> None:
    """`results[section][key] = entry`, stamped with the JAX version, first device, machine and
    CPU count, written atomically to `out` (non-finite floats as `null`)."""
    import jax

    from rodflow._io import write_json

    results.update(jax=jax.__version__, device=str(jax.devices()[0]), machine=platform.machine(),
                   cpus=os.cpu_count())
    results.setdefault(section, {})[key] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, results)
