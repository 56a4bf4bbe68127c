"""Metrics comparing every flow with the discrete optimiser on the same run (design note §5).

All functions take host (numpy) arrays indexed by step `k = 0..N`.
"""

from __future__ import annotations

import numpy as np


def _none_if_nan(x) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else x


def first_nonfinite(*arrays: np.ndarray) -> int | None:
    """Index of the first entry that is non-finite in any of the arrays (same length)."""
    bad = np.zeros(len(arrays[0]), dtype=bool)
    for a in arrays:
        a = np.asarray(a)
        bad |= ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    idx = np.flatnonzero(bad)
    return int(idx[0]) if idx.size else None


def eos_onset(sharp_steps: np.ndarray, sharpness: np.ndarray, threshold: float) -> int | None:
    """First measured step at which GD's sharpness exceeds the threshold (`2/lr` for GD)."""
    idx = np.flatnonzero(np.asarray(sharpness) > threshold)
    return int(sharp_steps[idx[0]]) if idx.size else None


def relative_distance(dist: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """`d(t) = |c(t) - m_t| / |m_t - m_0|`; undefined (nan) where GD has not moved yet."""
    dist, disp = np.asarray(dist, float), np.asarray(disp, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(disp > 0, dist / disp, np.nan)


def _mean(x):
    x = np.asarray(x, float)
    return _none_if_nan(np.mean(x)) if x.size and np.all(np.isfinite(x)) else None


def _max(x):
    x = np.asarray(x, float)
    return _none_if_nan(np.max(x)) if x.size and np.all(np.isfinite(x)) else None


def discrete_metrics(d: dict, threshold: float) -> dict:
    """Metrics of the discrete run (`loss`, `sharpness` series)."""
    onset = d["eos_onset_step"]
    steps = d["sharpness_step"]
    sharp = d["sharpness"]
    eos = steps >= onset if onset is not None else np.zeros(len(steps), bool)
    return {
        "final_loss": _none_if_nan(d["loss"][-1]),
        "sharpness_final": _none_if_nan(sharp[-1]) if len(sharp) else None,
        "sharpness_mean_eos": _mean(sharp[eos]) if eos.any() else None,
        "threshold": float(threshold),
    }


def flow_metrics(flow: dict, gd: dict, start: int = 0) -> dict:
    """Tracking metrics of one flow against the discrete run, over the whole run and over the
    EoS phase (steps at or after GD's EoS onset). Undefined values are `None`. A flow started at
    step `start` (warm start) is measured from there on."""
    onset = gd["eos_onset_step"]
    n = min(len(flow["rel_dist"]), len(gd["loss"]))
    k = np.arange(n)
    rel = flow["rel_dist"][:n]
    pair_loss = 0.5 * (gd["loss"][:n] + gd["loss_next"][:n])
    with np.errstate(divide="ignore", invalid="ignore"):
        loss_err = np.abs(flow["loss"][:n] - pair_loss) / np.abs(pair_loss)
    valid = (k >= max(1, start)) & np.isfinite(gd["disp"][:n]) & (gd["disp"][:n] > 0)
    eos = valid & (k >= onset) if onset is not None else np.zeros(n, bool)
    s_steps = flow["sharpness_step"]
    s_eos = ((s_steps >= onset) & (s_steps >= start) & (s_steps < n) if onset is not None
             else np.zeros(len(s_steps), bool))
    return {
        "rel_dist_mean_eos": _mean(rel[eos]) if eos.any() else None,
        "rel_dist_max_eos": _max(rel[eos]) if eos.any() else None,
        "rel_dist_mean": _mean(rel[valid]) if valid.any() else None,
        "rel_dist_max": _max(rel[valid]) if valid.any() else None,
        "loss_rel_err_mean_eos": _mean(loss_err[eos]) if eos.any() else None,
        "loss_rel_err_mean": _mean(loss_err[valid]) if valid.any() else None,
        "sharpness_mean_eos": _mean(flow["sharpness"][s_eos]) if s_eos.any() else None,
        "final_loss": _none_if_nan(flow["loss"][n - 1]) if n else None,
    }
