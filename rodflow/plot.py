"""Figures (matplotlib). Never imported by the numerical core."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"discrete": "black", "stable": "tab:blue", "central": "tab:orange", "rod": "tab:red"}


def _color(name, i):
    return COLORS.get(name, f"C{(i + 4) % 10}")


def plot_comparison(result, path: str | Path | None = None):
    """Three panels over steps, every run on each: loss (GD's, and each flow's prediction),
    sharpness against the threshold `2/lr`, and tracking error `d(t)` (log scale)."""
    series, metrics = result.series, result.metrics
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
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
    axes[1].axhline(metrics["threshold"], color="gray", ls=":", label=f"2/lr = {metrics['threshold']:.3g}")
    axes[0].set(yscale="log", xlabel="step", title="loss")
    axes[1].set(xlabel="step", title="sharpness")
    axes[2].set(yscale="log", xlabel="step", title="tracking error |c(t) - m_t| / |m_t - m_0|")
    for ax in axes:
        if onset is not None:
            ax.axvline(onset, color="gray", lw=0.8, alpha=0.5)
        ax.legend(fontsize=8)
    fig.suptitle(f"{metrics['problem']}  lr={metrics['lr']:g}  ({metrics['dtype']})"
                 + ("" if onset is None else f"  EoS from step {onset}"))
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def _finite(a):
    """Non-finite and absurdly large values (a diverging run) are not drawn."""
    a = np.asarray(a, float)
    return np.where(np.isfinite(a) & (np.abs(a) < 1e150), a, np.nan)
