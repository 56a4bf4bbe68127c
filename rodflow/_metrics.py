r"""Every metric rodflow reports, in one place. Each compares a flow with the discrete optimiser
on the same run; all functions take host (numpy) arrays indexed by step `k = 0..N`.

**Notation.** GD's iterates `x_k`, its loss `L_k = L(x_k)`, its sharpness `S_k` (top Hessian
eigenvalue, or the preconditioned one for adaptive optimisers) measured every
`sharpness_every` steps, and the stability threshold `T` (`2/lr` for GD; with a learning-rate
schedule `T_k = 2/lr(k)`, compared step by step). A flow at time `t = k`
has a centre `c(t)` and a prediction `L_pred(k)` of GD's loss (for Rod Flow
`(L(c + r) + L(c - r))/2`, for the others `L(c)`).

**EoS onset** (`eos_onset_step`): the first measured step of the *self-stabilised* phase.

- GD starts below the threshold (`S_0 <= T`): the first measured step with `S_k > T`.
- GD starts above it (`S_0 > T`, an initialisation sharper than `2/lr`): the opening
  transient, during which GD throws its sharpness down, is not EoS. The onset is the first
  upward crossing after the sharpness has been at or below `T` at a measured step. If it goes
  below and never comes back: no onset (`None`).
- GD starts above it and never goes below at any measured step: the whole run is at the edge
  (or diverging); the onset is step 0 and `eos_onset_rule` says `"above_from_start"`.

`sharpness_initial` records `S_0`, and `eos_onset_rule` which case applied (`"crossing"`,
`"crossing_after_transient"`, `"above_from_start"`, or `None` without an onset).

**EoS phase**: the steps `k >= eos_onset_step` (and `k >= start_step` for a warm-started flow,
and `k >= 1`, where GD has moved: `|m_k - m_0| > 0`).

**Tracking error** `d(k) = |c(k) - m_k| / |m_k - m_0|`, with GD's centre
`m_k = (x_k + x_{k+1})/2`; `rel_dist_mean_eos` / `rel_dist_max_eos` are its mean and max over
the EoS phase, `rel_dist_mean` / `rel_dist_max` over the whole run.

**Loss prediction.** GD's reference curve is its pair-mean loss
`L̄_k = (L_k + L_{k+1})/2` (what the rod's two ends predict; it removes GD's period-2 flip).

- `loss_err_eos = mean_EoS |L_pred - L̄| / mean_EoS |L̄|`: a ratio of means, so steps where
  GD's loss is near zero do not blow it up (a mean of pointwise relative errors would).
  `loss_err` is the same over the whole run.
- `loss_err_smooth_eos`: the same after both curves are smoothed by a centred moving average
  over `LOSS_SMOOTH_WINDOW = 20` steps (recorded as `loss_smooth_window`; see [`smooth`][]),
  within the EoS phase. The window is even (it removes any remaining period-2 flip exactly)
  and longer than the few-step spikes of a catapult, so this compares the *trend*, as the
  Central Flow literature compares a flow with GD's time-averaged loss.
- `catapult_lag_steps`: the signed lag `tau` (steps; `|tau| <= n_EoS // 4`) maximising the
  Pearson correlation between the flow's and GD's *wiggles* over the EoS phase, the wiggle being
  what the smoothing removed, `w = L - smooth(L)`. Positive: the flow's catapults come `tau`
  steps after GD's; negative: early. `catapult_corr` is the correlation at that lag: near 1 the
  flow predicts the spikes (perhaps shifted), near 0 it misses them. `catapult_amplitude` is
  the ratio of the wiggles' standard deviations, flow over GD: near 1 the flow's spikes are as
  large as GD's, near 0 the flow does not catapult. When it is below `MIN_WIGGLE = 0.01` there
  is nothing to align (a flow that never catapults, such as gradient flow, whose wiggle is
  rounding noise), and the lag and correlation are `None`; so are all three when GD has no
  wiggle or the phase is shorter than 8 steps.

**Sharpness**: `sharpness_mean_eos`, the mean over measured EoS steps of the flow's own
sharpness (GD's for `discrete`); for Rod Flow this is `kappa`, a free estimate.

Undefined values (no EoS, a non-finite entry in the window) are `None` (`null` in JSON).
"""

from __future__ import annotations

import numpy as np

LOSS_SMOOTH_WINDOW = 20
MIN_LAG_PHASE = 8
MIN_WIGGLE = 0.01


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


def eos_onset_rule(sharp_steps: np.ndarray, sharpness: np.ndarray,
                   threshold: float | np.ndarray) -> tuple[int | None, str | None]:
    """`(onset step, rule)` by the rule in the module docstring: the start of the self-stabilised
    phase, skipping an opening transient that starts above the threshold. `threshold`: one
    number, or one per measured step (a learning-rate schedule: `threshold(lr(k))`)."""
    steps, s = np.asarray(sharp_steps), np.asarray(sharpness, float)
    if s.size == 0:
        return None, None
    above = s > threshold
    if not above[0]:
        idx = np.flatnonzero(above)
        return (int(steps[idx[0]]), "crossing") if idx.size else (None, None)
    below = np.flatnonzero(~above)  # nan counts as "not above": a diverged run has left EoS
    if not below.size:
        return int(steps[0]), "above_from_start"
    after = np.flatnonzero(above[below[0]:])
    if not after.size:
        return None, None
    return int(steps[below[0] + after[0]]), "crossing_after_transient"


def relative_distance(dist: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """`d(t) = |c(t) - m_t| / |m_t - m_0|`; undefined (nan) where GD has not moved yet."""
    dist, disp = np.asarray(dist, float), np.asarray(disp, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(disp > 0, dist / disp, np.nan)


def _finite(x) -> bool:
    x = np.asarray(x, float)
    return bool(x.size) and bool(np.all(np.isfinite(x)))


def _mean(x):
    return _none_if_nan(np.mean(x)) if _finite(x) else None


def _max(x):
    return _none_if_nan(np.max(x)) if _finite(x) else None


def smooth(x: np.ndarray, window: int = LOSS_SMOOTH_WINDOW) -> np.ndarray:
    """Centred moving average over `window` steps (an even number): `window + 1` samples, the two
    end ones at half weight, so the kernel is symmetric, removes a period-2 flip exactly and leaves
    a straight line unchanged. Past the ends the curve is extended by point reflection
    (`x[-j] = 2 x[0] - x[j]`), which also leaves a line unchanged there."""
    x = np.asarray(x, float)
    half = int(window) // 2
    if half < 1 or x.size < 2:
        return x.copy()
    h = min(half, x.size - 1)
    kernel = np.ones(2 * half + 1)
    kernel[0] = kernel[-1] = 0.5
    kernel /= 2 * half
    pad_lo, pad_hi = 2 * x[0] - x[h:0:-1], 2 * x[-1] - x[-2:-h - 2:-1]
    if h < half:  # a phase shorter than the window: repeat the reflected ends
        pad_lo = np.concatenate([np.full(half - h, pad_lo[0]), pad_lo])
        pad_hi = np.concatenate([pad_hi, np.full(half - h, pad_hi[-1])])
    return np.convolve(np.concatenate([pad_lo, x, pad_hi]), kernel, "valid")


def loss_error(pred: np.ndarray, ref: np.ndarray) -> float | None:
    """`mean |pred - ref| / mean |ref|` (a ratio of means); `None` if empty or non-finite."""
    pred, ref = np.asarray(pred, float), np.asarray(ref, float)
    if not (_finite(pred) and _finite(ref)):
        return None
    den = np.mean(np.abs(ref))
    return _none_if_nan(np.mean(np.abs(pred - ref)) / den) if den > 0 else None


def best_lag(pred: np.ndarray, ref: np.ndarray, max_lag: int) -> tuple[int | None, float | None]:
    """`(tau, corr)`: the lag `|tau| <= max_lag` maximising the Pearson correlation of
    `pred[k + tau]` with `ref[k]` over the overlap, and that correlation. Positive `tau`: `pred`'s
    features come `tau` samples after `ref`'s. Ties go to the smallest `|tau|`."""
    pred, ref = np.asarray(pred, float), np.asarray(ref, float)
    n = min(len(pred), len(ref))
    if n < MIN_LAG_PHASE or not (_finite(pred[:n]) and _finite(ref[:n])):
        return None, None
    best: tuple[float, int] | None = None
    for tau in sorted(range(-max_lag, max_lag + 1), key=abs):
        a = pred[max(tau, 0): n + min(tau, 0)]
        b = ref[max(-tau, 0): n - max(tau, 0)]
        a, b = a - a.mean(), b - b.mean()
        den = np.sqrt(np.sum(a * a) * np.sum(b * b))
        if not den > 0:
            continue
        c = float(np.sum(a * b) / den)
        if best is None or c > best[0] + 1e-12:
            best = (c, tau)
    return (None, None) if best is None else (best[1], best[0])


LOSS_KEYS = ("loss_err_eos", "loss_err_smooth_eos", "catapult_lag_steps", "catapult_corr",
             "catapult_amplitude")


def loss_metrics(pred: np.ndarray, ref: np.ndarray, window: int = LOSS_SMOOTH_WINDOW) -> dict:
    """`loss_err_eos`, `loss_err_smooth_eos`, `catapult_lag_steps`, `catapult_corr` and
    `catapult_amplitude` of a flow's predicted loss `pred` against GD's pair-mean loss `ref`, both
    over the EoS phase only."""
    pred, ref = np.asarray(pred, float), np.asarray(ref, float)
    out = dict.fromkeys(LOSS_KEYS)
    out["loss_err_eos"] = loss_error(pred, ref)
    if out["loss_err_eos"] is None:
        return out
    sp, sr = smooth(pred, window), smooth(ref, window)
    out["loss_err_smooth_eos"] = loss_error(sp, sr)
    wp, wr = pred - sp, ref - sr
    rms_ref = float(np.std(wr))
    if len(ref) < MIN_LAG_PHASE or not rms_ref > 0:
        return out
    amp = float(np.std(wp)) / rms_ref
    out["catapult_amplitude"] = _none_if_nan(amp)
    if amp >= MIN_WIGGLE:
        lag, corr = best_lag(wp, wr, max_lag=len(ref) // 4)
        out.update(catapult_lag_steps=lag, catapult_corr=corr)
    return out


def discrete_metrics(d: dict, threshold: float) -> dict:
    """Metrics of the discrete run (`loss`, `sharpness` series, `eos_onset_step`)."""
    onset = d["eos_onset_step"]
    steps = d["sharpness_step"]
    sharp = d["sharpness"]
    eos = steps >= onset if onset is not None else np.zeros(len(steps), bool)
    return {
        "final_loss": _none_if_nan(d["loss"][-1]),
        "sharpness_initial": _none_if_nan(sharp[0]) if len(sharp) else None,
        "sharpness_final": _none_if_nan(sharp[-1]) if len(sharp) else None,
        "sharpness_mean_eos": _mean(sharp[eos]) if eos.any() else None,
        "threshold": float(threshold),
    }


def flow_metrics(flow: dict, gd: dict, start: int = 0) -> dict:
    """Tracking and loss metrics of one flow against the discrete run, over the whole run and
    over the EoS phase (module docstring). Undefined values are `None`. A flow started at step
    `start` (warm start) is measured from there on."""
    onset = gd["eos_onset_step"]
    n = min(len(flow["rel_dist"]), len(gd["loss"]))
    k = np.arange(n)
    rel = flow["rel_dist"][:n]
    pair_loss = 0.5 * (gd["loss"][:n] + gd["loss_next"][:n])
    pred = np.asarray(flow["loss"][:n], float)
    valid = (k >= max(1, start)) & np.isfinite(gd["disp"][:n]) & (gd["disp"][:n] > 0)
    eos = valid & (k >= onset) if onset is not None else np.zeros(n, bool)
    s_steps = flow["sharpness_step"]
    s_eos = ((s_steps >= onset) & (s_steps >= start) & (s_steps < n) if onset is not None
             else np.zeros(len(s_steps), bool))
    lm = loss_metrics(pred[eos], pair_loss[eos]) if eos.any() else dict.fromkeys(LOSS_KEYS)
    return {
        "rel_dist_mean_eos": _mean(rel[eos]) if eos.any() else None,
        "rel_dist_max_eos": _max(rel[eos]) if eos.any() else None,
        "rel_dist_mean": _mean(rel[valid]) if valid.any() else None,
        "rel_dist_max": _max(rel[valid]) if valid.any() else None,
        **lm,
        "loss_err": loss_error(pred[valid], pair_loss[valid]) if valid.any() else None,
        "sharpness_mean_eos": _mean(flow["sharpness"][s_eos]) if s_eos.any() else None,
        "final_loss": _none_if_nan(flow["loss"][n - 1]) if n else None,
    }


def seed_spread(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every numeric metric.

    `runs`: one `metrics["flows"]`-like dict per seed (`{flow: {key: value}}`). Returns
    `{flow: {key: {"mean", "std", "n"}}}` over the seeds where the value is a finite number
    (`std` is the sample standard deviation, `ddof=1`; 0 for one seed; `None` with no value).
    """
    out: dict[str, dict[str, dict]] = {}
    for flow in runs[0]:
        keys = [k for k, v in runs[0][flow].items() if not isinstance(v, (bool, str, list, dict))]
        for r in runs[1:]:
            keys += [k for k, v in r.get(flow, {}).items()
                     if k not in keys and not isinstance(v, (bool, str, list, dict))]
        per = {}
        for k in keys:
            vals = [r.get(flow, {}).get(k) for r in runs]
            vals = np.asarray([v for v in vals if v is not None and np.isfinite(v)], float)
            per[k] = {"mean": float(vals.mean()) if vals.size else None,
                      "std": (float(vals.std(ddof=1)) if vals.size > 1 else 0.0) if vals.size else None,
                      "n": int(vals.size)}
        out[flow] = per
    return out
