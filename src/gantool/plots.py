"""Pictures: the Gaussian histogram, loss curves, moments over training, the progress GIF.

matplotlib is imported inside each function, so runs that draw nothing do not pay for it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    fig.clf()
    _pyplot().close(fig)


def gaussian_histogram(
    samples: np.ndarray, mean: float, std: float, path: Path, title: str = ""
) -> None:
    """Density histogram of 1-D samples against the target N(mean, std²)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    lo = min(mean - 4 * std, float(np.percentile(samples, 0.1)))
    hi = max(mean + 4 * std, float(np.percentile(samples, 99.9)))
    # stepfilled: one polygon instead of 100 bars, drawn in less than half the time
    ax.hist(
        samples,
        bins=100,
        range=(lo, hi),
        density=True,
        alpha=0.6,
        histtype="stepfilled",
        label="generated",
    )
    x = np.linspace(lo, hi, 400)
    pdf = np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    ax.plot(x, pdf, "k-", lw=2, label=f"target N({mean:g}, {std:g}²)")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title(f"{title}  generated mean {samples.mean():.3f}, std {samples.std():.3f}".strip())
    ax.legend(loc="upper right")
    _save(fig, path)


def training_curves(rows: list[dict], path: Path) -> None:
    """D and G losses, and D's mean output on real and generated samples, against step."""
    plt = _pyplot()
    steps = [r["step"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    top.plot(steps, [r["train/d_loss"] for r in rows], label="D loss")
    top.plot(steps, [r["train/g_loss"] for r in rows], label="G loss")
    top.set_ylabel("loss")
    top.legend()
    bottom.plot(steps, [r["train/d_real"] for r in rows], label="D(x)")
    bottom.plot(steps, [r["train/d_fake"] for r in rows], label="D(G(z))")
    bottom.axhline(0.5, color="grey", lw=0.8, ls="--")
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("D output")
    bottom.set_xlabel("step")
    bottom.legend()
    _save(fig, path)


def moments_over_training(rows: list[dict], mean: float, std: float, path: Path) -> None:
    """Generated mean and std against step, with the target values as dashed lines."""
    plt = _pyplot()
    steps = [r["step"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, target, label in (
        (left, "train/fake_mean", mean, "mean"),
        (right, "train/fake_std", std, "std"),
    ):
        ax.plot(steps, [r[key] for r in rows], label=f"generated {label}")
        ax.axhline(target, color="k", ls="--", label=f"target {target:g}")
        ax.set_xlabel("step")
        ax.set_title(f"generated {label}")
        ax.legend()
    _save(fig, path)


def progress_gif(frames: list[Path], path: Path, seconds_per_frame: float = 0.5) -> None:
    """An animation of the sample images over training, the last one held longer."""
    if not frames:
        return
    from PIL import Image

    images = [Image.open(f).convert("RGB") for f in frames]
    size = images[-1].size
    images = [im if im.size == size else im.resize(size) for im in images]
    ms = int(seconds_per_frame * 1000)
    durations = [ms] * (len(images) - 1) + [4 * ms]
    tmp = path.with_name(path.name + ".tmp")
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
    )
    tmp.replace(path)
