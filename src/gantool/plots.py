"""Pictures: the Gaussian histogram, the MNIST digit grid, loss curves, moments over training,
the progress GIF.

matplotlib is imported inside each function, so runs that draw nothing do not pay for it.
Every picture is drawn to bytes first and written with the one atomic writer, so a failure
never leaves half a file.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from gantool.outputs import atomic_write

# The histogram's y-axis is TARGET_HEADROOM x the target's peak density, doubled as often as a
# frame needs: training frames then share one scale, and the progress GIF does not jump.
TARGET_HEADROOM = 1.6
# Its x-axis is the target's mean ± 4 std, doubled as often as the samples need.
TARGET_HALF_WIDTHS = 4
HISTOGRAM_BINS = 100
# Digit grids are drawn at least this wide: each pixel becomes a block of whole pixels.
MIN_GRID_WIDTH = 480
TITLE_BAND = 36  # pixels above a digit grid for its title


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _render(fig, fmt: str = "png", tight: bool = True) -> bytes:
    """The figure as the bytes of a PNG, PDF or SVG file; the figure is closed."""
    buffer = io.BytesIO()
    try:
        if tight:
            fig.tight_layout()
        fig.savefig(buffer, format=fmt, dpi=100)
    finally:
        _pyplot().close(fig)
    return buffer.getvalue()


def _save(fig, path: Path) -> None:
    data = _render(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _doubled(base: float, needed: float) -> float:
    """base x 2^k for the smallest k >= 0 that reaches `needed`: a limit that changes only
    when a picture would not fit, and then by a whole step."""
    limit = base
    while limit < needed and limit < 1e300:
        limit *= 2
    return limit


def histogram_axes(samples: np.ndarray, mean: float, std: float) -> tuple[float, float, float]:
    """The histogram's x-range (lo, hi) and y-limit, from the target N(mean, std²) rather than
    the samples, so that histograms of one run share them: x is mean ± 4 std and y is 1.6x the
    target's peak density, each doubled only as often as the finite samples need."""
    samples = samples[np.isfinite(samples)]
    outside = 0.0
    if samples.size:
        low, high = np.percentile(samples, [0.1, 99.9])
        outside = max(mean - float(low), float(high) - mean)
    half = _doubled(TARGET_HALF_WIDTHS * std, outside)
    lo, hi = mean - half, mean + half
    highest = 0.0
    if samples.size:
        densities, _ = np.histogram(samples, bins=HISTOGRAM_BINS, range=(lo, hi), density=True)
        highest = float(densities.max())
    return lo, hi, _doubled(TARGET_HEADROOM * _peak(std), highest)


def _peak(std: float) -> float:
    """The density of N(mean, std²) at its mean."""
    return 1 / (std * math.sqrt(2 * math.pi))


def gaussian_histogram(
    samples: np.ndarray, mean: float, std: float, title: str = "", fmt: str = "png"
) -> bytes:
    """Density histogram of 1-D samples (N,) against the target N(mean, std²), as the bytes of
    a PNG, PDF or SVG file, on the axes of histogram_axes. Non-finite samples are left out."""
    plt = _pyplot()
    lo, hi, top = histogram_axes(samples, mean, std)
    samples = samples[np.isfinite(samples)]
    fig, ax = plt.subplots(figsize=(6, 4))
    # stepfilled: one polygon instead of 100 bars, drawn in less than half the time
    ax.hist(
        samples,
        bins=HISTOGRAM_BINS,
        range=(lo, hi),
        density=True,
        alpha=0.6,
        histtype="stepfilled",
        label="generated",
    )
    x = np.linspace(lo, hi, 400)
    pdf = np.exp(-0.5 * ((x - mean) / std) ** 2) * _peak(std)
    ax.plot(x, pdf, "k-", lw=2, label=f"target N({mean:g}, {std:g}²)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, top)
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    moments = (
        f"generated mean {samples.mean():.3f}, std {samples.std():.3f}"
        if samples.size
        else "no finite samples"
    )
    ax.set_title(f"{title}  {moments}".strip())
    ax.legend(loc="upper right")
    return _render(fig, fmt)


def digit_grid(images: np.ndarray, title: str = "", fmt: str = "png") -> bytes:
    """Images (N, 28, 28) in [0, 1] as a PNG (or `fmt`): a square grid on white, `title`
    above it.

    Pixels are enlarged by a whole factor (nearest neighbour) until the grid is at least
    MIN_GRID_WIDTH pixels wide, so the digits can be seen without zooming.
    """
    plt = _pyplot()
    num, height, width = images.shape
    ncol = math.ceil(math.sqrt(num))
    nrow = math.ceil(num / ncol)
    pad = 2  # white lines between the digits, as torchvision's make_grid draws them
    grid = np.ones((nrow * (height + pad) + pad, ncol * (width + pad) + pad), np.float32)
    for i, image in enumerate(images):
        top, left = pad + (i // ncol) * (height + pad), pad + (i % ncol) * (width + pad)
        grid[top : top + height, left : left + width] = image
    scale = min(16, max(1, math.ceil(MIN_GRID_WIDTH / grid.shape[1])))
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)  # (H, W), nearest neighbour
    rgb = (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)[..., None].repeat(3, axis=2)
    dpi = 100
    total = grid.shape[0] + TITLE_BAND
    fig = plt.figure(figsize=(grid.shape[1] / dpi, total / dpi), dpi=dpi)
    fig.figimage(rgb, xo=0, yo=0, origin="upper")  # pixel for pixel, no resampling
    fig.text(0.5, 1 - TITLE_BAND / 2 / total, title, ha="center", va="center", fontsize=14)
    return _render(fig, fmt, tight=False)


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
    atomic_write(
        path,
        lambda tmp: images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
        ),
    )
