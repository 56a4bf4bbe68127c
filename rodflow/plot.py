"""Figures (matplotlib). Never imported by the numerical core."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ._io import write_figure

COLORS = {"discrete": "black", "stable": "tab:blue", "central": "tab:orange", "rod": "tab:red"}


_EXTRA = ["tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]


def _color(name, i):
    return COLORS.get(name, _EXTRA[i % len(_EXTRA)])


def plot_comparison(result, path: str | Path | None = None):
    """Three panels over steps, every run on each: loss (GD's, and each flow's prediction),
    sharpness against the threshold `2/lr` (with a learning-rate schedule the moving
    `2/lr(t)`), and tracking error `d(t)` (log scale)."""
    series, metrics = result.series, result.metrics
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    onset = metrics.get("eos_onset_step")
    series = {n: {k: _finite(v) for k, v in s.items()} for n, s in series.items()}
    for i, (name, s) in enumerate(series.items()):
        c = _color(name, i)
        lw = 1.0 if name == "discrete" else 1.6
        label = "GD" if name == "discrete" else name
        if name == "discrete":
            axes[0].plot(s["step"], s["loss"], color=c, lw=0.6, alpha=0.6, label="GD")
            pair = 0.5 * (s["loss"] + s["loss_next"])
            axes[0].plot(s["step"], pair, color=c, lw=lw, label="GD pair mean")
        else:
            axes[0].plot(s["step"], s["loss"], color=c, lw=lw, ls="--", label=label)
            axes[2].plot(s["step"][1:], s["rel_dist"][1:], color=c, lw=lw, label=label)
        axes[1].plot(s["sharpness_step"], s["sharpness"], color=c, lw=lw, label=label,
                     ls="-" if name == "discrete" else "--")
    moving = series.get("discrete", {}).get("threshold")
    if moving is not None:  # a learning-rate schedule: the threshold threshold(lr(t)) moves
        axes[1].plot(series["discrete"]["step"], moving, color="gray", ls=":", lw=1.2,
                     label=f"threshold at lr(t) (last {metrics['threshold']:.3g})")
    else:
        axes[1].axhline(metrics["threshold"], color="gray", ls=":",
                        label=f"threshold = {metrics['threshold']:.3g}")
    axes[0].set(yscale="log", xlabel="step", title="loss")
    axes[1].set(xlabel="step", title="sharpness" if metrics.get("sharpness_kind", "hessian") == "hessian"
                else "effective sharpness (of P^-1 H)")
    axes[2].set(yscale="log", xlabel="step", title="tracking error |c(t) - m_t| / |m_t - m_0|")
    for ax in axes:
        if onset is not None:
            ax.axvline(onset, color="gray", lw=0.8, alpha=0.5)
        ax.legend(fontsize=8)
    opt = metrics.get("optimizer", "gd")
    opt = "" if opt == "gd" else f"{opt}  "
    lr_text = (f"lr={metrics['lr']:g}" if "lr_schedule" not in metrics
               else f"lr schedule (peak {metrics['lr']:g})")
    fig.suptitle(f"{metrics['problem']}  {opt}{lr_text}  ({metrics['dtype']})"
                 + ("" if onset is None else f"  EoS from step {onset}"))
    fig.tight_layout()
    if path is not None:
        write_figure(path, fig)
    return fig


def _threshold_at(metrics, discrete, steps):
    """The threshold at the given steps: per step with a learning-rate schedule (the series'
    `threshold`), else the run's one number."""
    moving = discrete.get("threshold")
    if moving is None:
        return metrics["threshold"]
    moving = np.asarray(moving, float)
    return moving[np.minimum(np.asarray(steps, int), len(moving) - 1)]


def _finite(a):
    """Non-finite and absurdly large values (a diverging run) are not drawn."""
    a = np.asarray(a, float)
    return np.where(np.isfinite(a) & (np.abs(a) < 1e150), a, np.nan)


def plot_sweep(result, path: str | Path | None = None):
    """Three panels: GD's and Rod Flow's sharpness divided by `2/lr` over time for every `lr`;
    final loss against `lr`; mean EoS tracking error of each flow against `lr`."""
    runs, metrics = result.runs, result.metrics
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    cmap = matplotlib.colormaps["viridis"]
    lrs = np.array([r["lr"] for r in metrics["runs"]])
    span = (lrs.min(), lrs.max()) if lrs.size else (0, 1)
    for comp, run in zip(runs, metrics["runs"]):
        frac = 0.0 if span[1] == span[0] else (run["lr"] - span[0]) / (span[1] - span[0])
        c = cmap(frac)
        d = comp.series["discrete"]
        thr = _threshold_at(comp.metrics, d, d["sharpness_step"])
        axes[0].plot(d["sharpness_step"], _finite(d["sharpness"]) / thr, color=c, lw=1.0)
        if "rod" in comp.series:
            s = comp.series["rod"]
            rod_thr = _threshold_at(comp.metrics, d, s["sharpness_step"])
            axes[0].plot(s["sharpness_step"], _finite(s["sharpness"]) / rod_thr, color=c, lw=1.0, ls="--")
    axes[0].axhline(1.0, color="gray", ls=":")
    axes[0].set(xlabel="step", ylabel="sharpness / (2/lr)",
                title="sharpness / (2/lr): GD solid, rod dashed (colour = lr)")
    seeds = sorted({str(r["seed"]) for r in metrics["runs"]})
    names = [n for n in metrics["runs"][0]["flows"]]
    for si, seed in enumerate(seeds):
        sel = [r for r in metrics["runs"] if str(r["seed"]) == seed]
        x = [r["lr"] for r in sel]
        for i, name in enumerate(names):
            y = [r["flows"][name].get("final_loss") for r in sel]
            y = [np.nan if v is None else v for v in y]
            axes[1].plot(x, y, marker="o", color=_color(name, i), alpha=1.0 if si == 0 else 0.5,
                         label=(name if name != "discrete" else "GD") if si == 0 else None)
            if name == "discrete":
                continue
            e = [r["flows"][name].get("rel_dist_mean_eos") for r in sel]
            e = [np.nan if v is None else v for v in e]
            axes[2].plot(x, e, marker="o", color=_color(name, i), alpha=1.0 if si == 0 else 0.5,
                         label=name if si == 0 else None)
    axes[1].set(xlabel="lr", yscale="log", title="final loss")
    axes[2].set(xlabel="lr", yscale="log", title="mean tracking error during EoS")
    for ax in axes[1:]:
        ax.legend(fontsize=8)
    fig.suptitle(f"{metrics['problem']} sweep, {len(lrs)} runs, {metrics['steps']} steps")
    fig.tight_layout()
    if path is not None:
        write_figure(path, fig)
    return fig
