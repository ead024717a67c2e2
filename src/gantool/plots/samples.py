"""Pictures of samples: the Gaussian histogram, the MNIST digit grid, the mixtures' histogram
and scatter, the user's vectors' pairs plot. Each returns the bytes of an image file, drawn
in memory, so a failure never leaves half a file."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.patches import Circle, Patch

from gantool.plots.render import doubled, figure, render

# The histogram's y-axis is TARGET_HEADROOM x the target's peak density, doubled as often as a
# frame needs: training frames then share one scale, and the progress GIF does not jump.
TARGET_HEADROOM = 1.6
# Its x-axis is the target's mean ± 4 std, doubled as often as the samples need.
TARGET_HALF_WIDTHS = 4
HISTOGRAM_BINS = 100
# Digit grids are drawn at least this wide: each pixel becomes a block of whole pixels.
MIN_GRID_WIDTH = 480
TITLE_BAND = 36  # pixels above a digit grid for its title


def histogram_axes(samples: np.ndarray, mean: float, std: float) -> tuple[float, float, float]:
    """The histogram's x-range (lo, hi) and y-limit, from the target N(mean, std²) rather than
    the samples, so that histograms of one run share them: x is mean ± 4 std and y is 1.6x the
    target's peak density, each doubled only as often as the finite samples need."""
    samples = samples[np.isfinite(samples)]
    outside = 0.0
    if samples.size:
        low, high = np.percentile(samples, [0.1, 99.9])
        outside = max(mean - float(low), float(high) - mean)
    half = doubled(TARGET_HALF_WIDTHS * std, outside)
    lo, hi = mean - half, mean + half
    highest = 0.0
    if samples.size:
        densities, _ = np.histogram(samples, bins=HISTOGRAM_BINS, range=(lo, hi), density=True)
        highest = float(densities.max())
    return lo, hi, doubled(TARGET_HEADROOM * _peak(std), highest)


def _peak(std: float) -> float:
    """The density of N(mean, std²) at its mean."""
    return 1 / (std * math.sqrt(2 * math.pi))


def _generated_histogram(ax, samples: np.ndarray, lo: float, hi: float) -> None:
    """Generated 1-D samples as a density histogram on [lo, hi], as every histogram draws them.
    stepfilled: one polygon instead of 100 bars, drawn in less than half the time."""
    ax.hist(
        samples,
        bins=HISTOGRAM_BINS,
        range=(lo, hi),
        density=True,
        alpha=0.6,
        histtype="stepfilled",
        label="generated",
    )


def gaussian_histogram(
    samples: np.ndarray, mean: float, std: float, title: str = "", fmt: str = "png"
) -> bytes:
    """Density histogram of 1-D samples (N,) against the target N(mean, std²), as the bytes of
    a PNG, PDF or SVG file, on the axes of histogram_axes. Non-finite samples are left out."""
    lo, hi, top = histogram_axes(samples, mean, std)
    samples = samples[np.isfinite(samples)]
    fig = figure(figsize=(6, 4))
    ax = fig.subplots()
    _generated_histogram(ax, samples, lo, hi)
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
    return render(fig, fmt)


def class_grid(
    images: np.ndarray, title: str, fmt: str, classes=None, names: Sequence[str] = ()
) -> bytes:
    """digit_grid of a labelled set's images: by `classes` (N,), a conditional generator's,
    one row per class present, labelled with its name in `names`; a single class (sample
    --label) is a square grid titled with it."""
    rows = None
    if classes is not None:
        present = classes.long().cpu().unique().tolist()  # in order
        if len(present) == 1:
            title += f", class {names[present[0]]}"
        else:
            chosen = classes.long().cpu().numpy()
            rows = [(names[c], images[chosen == c]) for c in present]
    return digit_grid(images, title, fmt.lstrip("."), rows)


def digit_grid(
    images: np.ndarray,
    title: str = "",
    fmt: str = "png",
    rows: list[tuple[str, np.ndarray]] | None = None,
) -> bytes:
    """Images (N, H, W) grey or (N, H, W, 3) colour, in [0, 1], as a PNG (or `fmt`): a square
    grid on white, `title` above it; or, given `rows` (a label and its images, for each row),
    one labelled row each, as a conditional generator's classes are drawn.

    Pixels are enlarged by a whole factor (nearest neighbour) until the grid is at least
    MIN_GRID_WIDTH pixels wide, so the digits can be seen without zooming.
    """
    if rows is not None:
        ncol = max(len(row) for _, row in rows)
        blank = np.ones_like(images[:1])  # (1, 28, 28): a white cell where a row is short
        pads = [np.concatenate([row, blank.repeat(ncol - len(row), 0)]) for _, row in rows]
        images = np.concatenate(pads)
    if images.ndim == 3:  # grey: the same value in each colour
        images = images[..., None].repeat(3, axis=3)
    num, height, width, _ = images.shape
    ncol = ncol if rows is not None else math.ceil(math.sqrt(num))
    nrow = math.ceil(num / ncol)
    pad = 2  # white lines between the digits, as torchvision's make_grid draws them
    grid = np.ones((nrow * (height + pad) + pad, ncol * (width + pad) + pad, 3), np.float32)
    for i, image in enumerate(images):
        top, left = pad + (i // ncol) * (height + pad), pad + (i % ncol) * (width + pad)
        grid[top : top + height, left : left + width] = image
    scale = min(16, max(1, math.ceil(MIN_GRID_WIDTH / grid.shape[1])))
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)  # (H, W, 3), nearest neighbour
    rgb = (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)
    dpi = 100
    # A band on the left for the rows' labels, as wide as the longest needs at 12 pt.
    band = 0 if rows is None else 16 + 8 * max(len(label) for label, _ in rows)
    total, wide = grid.shape[0] + TITLE_BAND, grid.shape[1] + band
    fig = figure(figsize=(wide / dpi, total / dpi), dpi=dpi)
    fig.figimage(rgb, xo=band, yo=0, origin="upper")  # pixel for pixel, no resampling
    fig.text(0.5, 1 - TITLE_BAND / 2 / total, title, ha="center", va="center", fontsize=14)
    cell = (height + pad) * scale
    for i, (label, _) in enumerate(rows or ()):
        middle = grid.shape[0] - (pad * scale + i * cell + height * scale / 2)  # from the bottom
        fig.text((band - 8) / wide, middle / total, label, ha="right", va="center", fontsize=12)
    return render(fig, fmt, tight=False)


def walk_strip(paths: np.ndarray, labels: list[str], title: str = "", fmt: str = "png") -> bytes:
    """Latent walks (N, K, C, H, W) in [0, 1] (C: 1 or 3) as a digit grid of one row per
    path, labelled (a conditional generator's class; "" for none), its K points from left to
    right: the first column is where each walk starts, the last where it ends."""
    images = np.moveaxis(paths, 2, -1)  # (N, K, H, W, C)
    if images.shape[-1] == 1:
        images = images[..., 0]  # grey: (N, K, H, W)
    rows = list(zip(labels, images, strict=True))
    return digit_grid(images.reshape(-1, *images.shape[2:]), title, fmt, rows)


# --- Gaussian mixtures ---------------------------------------------------------------------------
MIXTURE_DENSITY_BINS = 120  # per axis of the density panel


def mixture_density(x: np.ndarray, means, stds, weights) -> np.ndarray:
    """The density of the 1-D mixture of N(means[k], stds[k]²) with weights, at x."""
    x = np.asarray(x, dtype=np.float64)[:, None]
    m, s, w = (np.asarray(v, dtype=np.float64) for v in (means, stds, weights))
    return (w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))).sum(axis=1)


def mixture_histogram(
    samples: np.ndarray, means, stds, weights, title: str = "", fmt: str = "png"
) -> bytes:
    """Density histogram of 1-D samples (N,) against the mixture's density, as the bytes of a
    PNG, PDF or SVG file. The axes come from the target, as histogram_axes does it for one
    Gaussian: x from 4 stds beyond the outer centres, y 1.6x the highest peak, each doubled
    only as often as the finite samples need, so one run's pictures share them."""
    finite = samples[np.isfinite(samples)]
    lo = min(m - TARGET_HALF_WIDTHS * s for m, s in zip(means, stds, strict=True))
    hi = max(m + TARGET_HALF_WIDTHS * s for m, s in zip(means, stds, strict=True))
    middle, half = (lo + hi) / 2, (hi - lo) / 2
    if finite.size:
        low, high = np.percentile(finite, [0.1, 99.9])
        half = doubled(half, max(middle - float(low), float(high) - middle))
    lo, hi = middle - half, middle + half
    x = np.linspace(lo, hi, 800)
    pdf = mixture_density(x, means, stds, weights)
    highest = 0.0
    if finite.size:
        densities, _ = np.histogram(finite, bins=HISTOGRAM_BINS, range=(lo, hi), density=True)
        highest = float(densities.max())
    fig = figure(figsize=(6, 4))
    ax = fig.subplots()
    if finite.size:  # a density of nothing would divide by zero
        _generated_histogram(ax, finite, lo, hi)
    ax.plot(x, pdf, "k-", lw=1.5, label=f"target: {len(means)} components")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, doubled(TARGET_HEADROOM * float(pdf.max()), highest))
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right")
    return render(fig, fmt)


def mixture_square(samples: np.ndarray, centres: np.ndarray, stds) -> tuple[float, float, float]:
    """The square (x middle, y middle, half width) that a mixture's scatter shows: the centres'
    bounding box with a margin of a quarter of its width (at least 6 stds), its half width
    doubled only as often as the finite samples (0.1 to 99.9 percentiles) need. The grid's
    centres at ±4 give ±6, PacGAN's own axes."""
    low, high = centres.min(axis=0), centres.max(axis=0)
    middle = (low + high) / 2
    span = float((high - low).max())
    half = span / 2 + max(span / 4, 6 * max(stds))
    finite = samples[np.isfinite(samples).all(axis=1)]
    if len(finite):
        lo, hi = np.percentile(finite, [0.1, 99.9], axis=0)
        half = doubled(half, float(np.max(np.maximum(middle - lo, hi - middle))))
    return float(middle[0]), float(middle[1]), half


def mixture_scatter(samples: np.ndarray, centres, stds, title: str = "", fmt: str = "png") -> bytes:
    """Samples (N, D ≥ 2), their first two coordinates, as two panels: a scatter over the
    component centres, each ringed at 3 stds (the high-quality radius), and the samples'
    density as a 2-D histogram on a log scale, where a scatter's overlapping dots hide how much
    mass each mode has. Returns the bytes of a PNG, PDF or SVG file."""
    xy = np.asarray(samples, dtype=np.float64)[:, :2]
    c = np.asarray(centres, dtype=np.float64)[:, :2]  # (K, 2)
    mx, my, half = mixture_square(xy, c, stds)
    extent = (mx - half, mx + half, my - half, my + half)
    finite = xy[np.isfinite(xy).all(axis=1)]
    fig = figure(figsize=(11, 5.4))
    left, right = fig.subplots(1, 2)
    # The samples over the centres' markers, so that a mode's mass is not hidden under them.
    left.scatter(
        finite[:, 0], finite[:, 1], s=6, c="black", alpha=0.3, marker=".", linewidths=0, zorder=3
    )
    counts, _, _ = np.histogram2d(
        finite[:, 0],
        finite[:, 1],
        bins=MIXTURE_DENSITY_BINS,
        range=[extent[:2], extent[2:]],
    )
    shown = np.ma.masked_equal(counts.T, 0)  # empty bins stay white
    image = right.imshow(
        shown,
        origin="lower",
        extent=extent,
        cmap="viridis",
        norm=LogNorm(vmin=1, vmax=max(1.0, float(counts.max()))),
        interpolation="nearest",
    )
    fig.colorbar(image, ax=right, fraction=0.046, pad=0.04, label="samples per bin")
    left.plot(c[:, 0], c[:, 1], "r+", ms=5, mew=0.8)
    for ax in (left, right):
        for (x, y), s in zip(c, stds, strict=True):
            ax.add_patch(Circle((x, y), 3 * s, fill=False, ec="red", lw=0.6))
        ax.set_xlim(extent[:2])
        ax.set_ylim(extent[2:])
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    dims = np.asarray(samples).shape[1]
    first_two = f" (the first 2 of {dims} coordinates)" if dims > 2 else ""
    left.set_title(f"{len(finite):,} samples{first_two}; red: centres, 3-std circles", fontsize=9)
    right.set_title("density of the samples (log scale); red: 3-std circles", fontsize=9)
    fig.suptitle(title, fontsize=11)
    return render(fig, fmt)


# --- the user's vectors ---------------------------------------------------------------------------
PAIRS_FEATURES = 4  # the first features, in pairs: histograms on the diagonal, scatters below
MORE_HISTOGRAMS = 16  # at most this many further features get a histogram of their own
SCATTER_POINTS = 2000  # points of each set in a scatter panel
VECTOR_BINS = 50
GENERATED_COLOUR, DATA_COLOUR = "tab:orange", "tab:blue"


def vector_axes(
    fake: np.ndarray, real: np.ndarray | None, mean: float, scale: float
) -> tuple[float, float]:
    """One feature's range in a vectors picture: the data's 0.5 to 99.5 percentiles with a
    tenth more each side (without the data: its recorded mean ± 4 std), the half width
    doubled only as often as the finite generated values (0.1 to 99.9 percentiles) need, so
    the pictures of one run share it."""
    if real is not None:
        low, high = np.percentile(real, [0.5, 99.5])
        middle, half = (low + high) / 2, (high - low) / 2 * 1.2
    else:
        middle, half = mean, TARGET_HALF_WIDTHS * scale
    half = half if half > 0 else scale  # a constant feature
    finite = fake[np.isfinite(fake)]
    if finite.size:
        low, high = np.percentile(finite, [0.1, 99.9])
        half = doubled(half, max(middle - float(low), float(high) - middle))
    return float(middle - half), float(middle + half)


def _feature_histogram(ax, fake: np.ndarray, real: np.ndarray | None, limits) -> None:
    """Generated (a line) against data (filled) densities of one feature, on the given range;
    y is 1.6x the data's highest bin, doubled as the generated one needs."""
    fake = fake[np.isfinite(fake)]
    top = 0.0
    if real is not None:
        densities, _, _ = ax.hist(
            real, VECTOR_BINS, range=limits, density=True, histtype="stepfilled",
            color=DATA_COLOUR, alpha=0.35,
        )  # fmt: skip
        top = TARGET_HEADROOM * float(densities.max())
    if fake.size:
        densities, _, _ = ax.hist(
            fake, VECTOR_BINS, range=limits, density=True, histtype="step",
            color=GENERATED_COLOUR, lw=1.4,
        )  # fmt: skip
        top = doubled(top, float(densities.max())) if top else None
    ax.set_xlim(limits)
    if top:
        ax.set_ylim(0, top)
    ax.set_yticks([])


def vectors_picture(
    fake: np.ndarray,
    real: np.ndarray | None,
    names: list[str],
    mean,
    scale,
    title: str = "",
    fmt: str = "png",
    note: str = "",
) -> bytes:
    """Generated rows fake (N, F) against the data's rows real (M, F) (None: not drawn), in
    the data's units, as the bytes of a PNG, PDF or SVG file: a pairs plot of the first 4
    features (each one's histogram on the diagonal, scatters of each pair below it) and a
    histogram of each further feature, 16 at most. `mean` and `scale` (F,) set the axes when
    there is no data; `note` is printed under the title."""
    num_features = fake.shape[1]
    pairs = min(num_features, PAIRS_FEATURES)
    more = list(range(pairs, min(num_features, pairs + MORE_HISTOGRAMS)))
    cols = pairs if not more else PAIRS_FEATURES
    rows = pairs + math.ceil(len(more) / cols)
    limits = [
        vector_axes(fake[:, j], None if real is None else real[:, j], mean[j], scale[j])
        for j in range(pairs + len(more))
    ]
    panel = max(2.3, 5.5 / cols)  # inches; one feature alone gets a readable width
    fig = figure(figsize=(panel * cols, panel * rows + 0.3))
    grid = fig.add_gridspec(rows, cols)
    # Scatters show an even spread of each set, at most SCATTER_POINTS points.
    fake_points = fake[:: max(1, len(fake) // SCATTER_POINTS)][:SCATTER_POINTS]
    real_points = None if real is None else real[:: max(1, len(real) // SCATTER_POINTS)]

    def label(ax, row: int, col: int, x: str, y: str) -> None:
        ax.tick_params(labelsize=7)
        if row == pairs - 1 or row >= pairs:
            ax.set_xlabel(x, fontsize=8)
        if col == 0 and y:
            ax.set_ylabel(y, fontsize=8)

    for i in range(pairs):
        for j in range(i + 1):
            ax = fig.add_subplot(grid[i, j])
            if i == j:
                _feature_histogram(ax, fake[:, j], None if real is None else real[:, j], limits[j])
                label(ax, i, j, names[j], "")
                continue
            if real_points is not None:
                ax.scatter(
                    real_points[:, j], real_points[:, i], s=4, c=DATA_COLOUR, alpha=0.4,
                    marker=".", linewidths=0, rasterized=True,
                )  # fmt: skip
            ax.scatter(
                fake_points[:, j], fake_points[:, i], s=4, c=GENERATED_COLOUR, alpha=0.4,
                marker=".", linewidths=0, rasterized=True,
            )  # fmt: skip
            ax.set_xlim(limits[j])
            ax.set_ylim(limits[i])
            label(ax, i, j, names[j], names[i])
    for k, j in enumerate(more):
        ax = fig.add_subplot(grid[pairs + k // cols, k % cols])
        _feature_histogram(ax, fake[:, j], None if real is None else real[:, j], limits[j])
        label(ax, pairs + k // cols, k % cols, names[j], "")

    handles = [Patch(color=GENERATED_COLOUR, label=f"generated ({len(fake):,})")]
    if real is not None:
        handles.append(Patch(color=DATA_COLOUR, alpha=0.5, label=f"data ({len(real):,})"))
    if pairs > 1:  # in the empty corner, top right
        corner = fig.add_subplot(grid[0, cols - 1])
        corner.axis("off")
        corner.legend(handles=handles, loc="upper right", fontsize=9, frameon=False)
    else:
        fig.axes[0].legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
    shown = pairs + len(more)
    heading = title
    if shown < num_features:
        heading += f"  (the first {shown} of {num_features} features)"
    width = int(panel * cols * 11)  # characters that fit across the figure
    lines = [line for line in (heading.strip(), *textwrap.wrap(note, width)) if line]
    if lines:
        fig.suptitle("\n".join(lines), fontsize=10, x=0.02, ha="left")
    return render(fig, fmt)  # tight_layout leaves room for the title
