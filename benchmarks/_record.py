"""Keyed benchmark results: one JSON file per script, entries added under a key, the file
stamped with the software and machine of its last write (`cost.py`, `central_settings.py`,
`compile_times.py`)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


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
