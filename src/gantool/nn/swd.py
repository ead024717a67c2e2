"""Sliced Wasserstein distance between two sets of images, on Laplacian-pyramid patches.

Karras et al. (2018, "Progressive Growing of GANs", section 5) compare the local image
statistics of two sets at each level of a Laplacian pyramid: from every image, 128 random
7x7 neighbourhoods per level, each a descriptor of C x 7 x 7 numbers normalised per channel;
then the sliced Wasserstein distance between the real and the fake descriptors: the mean, over
4 repeats of 128 random unit directions, of the 1-D Wasserstein distance between their
projections. The finest level sees texture and edges, the coarsest the overall shape. The
reported number is the distance x 1e3. It needs no pretrained network, so it works offline
on any image set; unlike FID it says at which scale two sets differ.

This is a torch re-implementation of their metrics/sliced_wasserstein.py, with the same
constants, pyramid filter and normalisation. Where it differs:

- The two sets may differ in size: the 1-D distance is then the exact one between the two
  empirical distributions (their quantile functions compared on a common grid), which for
  equal sizes is their code's mean gap between sorted projections.
- The lowest level is the last one of at least 14 px (two neighbourhood widths) instead of
  16 px. For every power-of-two size this is the same pyramid as theirs (64 px: levels 64,
  32, 16; 32 px: 32, 16); for MNIST's 28 px it gives levels 28 and 14 where 16 px would give
  one level, 28. A one-level pyramid is the raw image, which mixes fine detail with the
  overall shape in one number; with two levels, 28 is the detail band (edges, stroke
  texture) and 14 the low-pass image (where the strokes are). At 14 px a 7x7 neighbourhood
  has 8 x 8 places to sit, so 128 draws per image still sample it well.

As in their code, each set's descriptors are normalised by that set's own per-channel mean
and standard deviation, so a change of brightness or contrast that is the same over a whole
set (per channel) does not count; SWD measures the shape of the patch distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEIGHBOURHOOD_SIZE = 7  # a neighbourhood (patch) is 7x7 pixels
NEIGHBOURHOODS_PER_IMAGE = 128  # patches drawn from each image at each level
DIRECTION_REPEATS = 4
DIRECTIONS_PER_REPEAT = 128
MIN_RESOLUTION = 2 * NEIGHBOURHOOD_SIZE  # Karras et al. stop at 16; see the module docstring
SCALE = 1e3  # the reported number is the distance x 1e3, as in the paper's tables

IMAGES_PER_CHUNK = 512  # images put through the pyramid at once
MAX_PROJECTED = 2**24  # projections held at once per set: 64 MB of floats

# The 5x5 binomial filter of OpenCV's pyrDown / pyrUp, as one separable row: [1 4 6 4 1] / 16.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def resolutions(size: int) -> list[int]:
    """The pyramid's levels for images of `size` px, finest first: halving while the level is
    at least MIN_RESOLUTION px (64 -> [64, 32, 16]; 28 -> [28, 14]; 32 -> [32, 16])."""
    levels = []
    while size >= MIN_RESOLUTION:
        levels.append(size)
        size = (size + 1) // 2
    return levels


def _blur(images: torch.Tensor, gain: float) -> torch.Tensor:
    """The binomial filter x gain over each channel of (B, C, H, W), edges mirrored without
    repeating the edge pixel (scipy's 'mirror', torch's 'reflect'), as their pyramid does."""
    channels = images.shape[1]
    row = (_BINOMIAL * gain**0.5).to(images.dtype)
    kernel = (row[:, None] * row[None, :]).expand(channels, 1, 5, 5)  # (C, 1, 5, 5)
    padded = F.pad(images, (2, 2, 2, 2), mode="reflect")
    return F.conv2d(padded, kernel, groups=channels)


def _pyramid_down(images: torch.Tensor) -> torch.Tensor:
    """Blur, then keep every second row and column: (B, C, H, W) -> (B, C, ⌈H/2⌉, ⌈W/2⌉)."""
    return _blur(images, 1.0)[:, :, ::2, ::2]


def _pyramid_up(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zeros between the pixels, then blur x 4 (each output pixel gets a quarter of the
    filter's weight from real pixels): (B, C, h, w) -> (B, C, height, width)."""
    batch, channels, h, w = images.shape
    spread = images.new_zeros(batch, channels, 2 * h, 2 * w)
    spread[:, :, ::2, ::2] = images
    return _blur(spread, 4.0)[:, :, :height, :width]


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """The Laplacian pyramid of (B, C, H, W) images, finest first: each level but the last is
    the detail its half-size neighbour lacks (level - up(down(level))); the last is the
    low-pass image itself. Linear, so an affine change of pixel values (-1..1 or 0..255)
    changes every level by the same factor and the normalised descriptors not at all."""
    levels = [images.float()]
    for _ in range(1, num_levels):
        finer = levels[-1]
        coarser = _pyramid_down(finer)
        levels[-1] = finer - _pyramid_up(coarser, finer.shape[2], finer.shape[3])
        levels.append(coarser)
    return levels


def _draw_places(
    num_images: int, height: int, width: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (rows, cols), each (num_images, 128), of neighbourhoods that fit inside."""
    half = NEIGHBOURHOOD_SIZE // 2
    shape = (num_images, NEIGHBOURHOODS_PER_IMAGE)
    rows = torch.randint(half, height - half, shape, generator=generator)
    cols = torch.randint(half, width - half, shape, generator=generator)
    return rows, cols


def _cut_neighbourhoods(level: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
    """The 7x7 neighbourhoods of (B, C, h, w) around centres (B, 128): (B x 128, C, 7, 7)."""
    half = NEIGHBOURHOOD_SIZE // 2
    offsets = torch.arange(-half, half + 1)
    r = (rows[:, :, None] + offsets)[:, :, :, None]  # (B, 128, 7, 1)
    c = (cols[:, :, None] + offsets)[:, :, None, :]  # (B, 128, 1, 7)
    b = torch.arange(len(level))[:, None, None, None]  # (B, 1, 1, 1)
    patches = level.permute(0, 2, 3, 1)[b, r, c]  # (B, 128, 7, 7, C)
    return patches.permute(0, 1, 4, 2, 3).reshape(-1, level.shape[1], 7, 7)


def _normalise_per_channel(descriptors: torch.Tensor) -> None:
    """Each channel of (n, C, 7, 7) to mean 0 and standard deviation 1 over all its numbers,
    in place; the statistics are summed in float64 (n x 49 numbers per channel)."""
    for channel in range(descriptors.shape[1]):
        values = descriptors[:, channel]  # (n, 7, 7), a view
        mean = sum(part.double().sum() for part in values.split(65536)) / values.numel()
        values -= mean.float()
        var = sum(part.double().pow(2).sum() for part in values.split(65536)) / values.numel()
        std = var.sqrt().item()
        values /= std if std > 0 else 1.0  # a constant channel stays 0, not NaN


def _descriptors(
    images: torch.Tensor, level_index: int, num_levels: int, generator: torch.Generator
) -> torch.Tensor:
    """The normalised descriptors (N x 128, C x 49) of one pyramid level of (N, C, H, W).

    The pyramid is rebuilt per level, a chunk of images at a time, so that only one level's
    descriptors of one set are ever held (10,000 images of 64x64x3: 0.75 GB)."""
    num, channels = len(images), images.shape[1]
    height, width = images.shape[2], images.shape[3]
    for _ in range(level_index):
        height, width = (height + 1) // 2, (width + 1) // 2
    rows, cols = _draw_places(num, height, width, generator)  # drawn once: chunks don't matter
    per_image = NEIGHBOURHOODS_PER_IMAGE
    out = torch.empty(num * per_image, channels, NEIGHBOURHOOD_SIZE, NEIGHBOURHOOD_SIZE)
    for start in range(0, num, IMAGES_PER_CHUNK):
        stop = min(start + IMAGES_PER_CHUNK, num)
        level = laplacian_pyramid(images[start:stop], num_levels)[level_index]
        patches = _cut_neighbourhoods(level, rows[start:stop], cols[start:stop])
        out[start * per_image : stop * per_image] = patches
    _normalise_per_channel(out)
    return out.reshape(len(out), -1)


def _sorted_projections(descriptors: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Projections of (n, D) descriptors on (D, k) unit directions, each sorted: (k, n).

    Sorting is most of SWD's time; numpy's vectorised sort is 3-4x torch's on a CPU."""
    projections = torch.mm(directions.T, descriptors.T)  # (k, n), contiguous
    projections.numpy().sort(axis=1)  # in place, row by row
    return projections


def _wasserstein1_sorted(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sum over rows of the 1-D Wasserstein distance between the empirical distributions of
    each row of sorted a (k, n) and sorted b (k, m), as a float64 scalar.

    W1 = ∫₀¹ |Qa(u) - Qb(u)| du over the quantile functions. With n == m both are steps at
    i/n: the mean gap between sorted values. Otherwise the steps of both, at multiples of
    1/(n m) counted as integers so no rounding moves a step, split [0, 1] into pieces on
    which both are constant."""
    n, m = a.shape[1], b.shape[1]
    if n == m:
        return (a - b).abs().sum(dtype=torch.float64) / n
    steps = torch.cat([torch.arange(1, n + 1) * m, torch.arange(1, m + 1) * n]).sort().values
    widths = torch.diff(steps, prepend=steps.new_zeros(1))  # (n + m,) in units of 1/(n m)
    # On the piece ending at step t, Qa is a's value number ⌈t / m⌉ (from 1).
    gaps = (a[:, (steps - 1) // m] - b[:, (steps - 1) // n]).abs()  # (k, n + m)
    return (gaps.double() * widths.double()).sum() / (n * m)


def _sliced_distance(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> float:
    """Mean 1-D Wasserstein distance between the projections of descriptors a (n, D) and
    b (m, D) on DIRECTION_REPEATS x DIRECTIONS_PER_REPEAT random unit directions."""
    total = torch.zeros((), dtype=torch.float64)
    per_chunk = max(1, MAX_PROJECTED // max(len(a), len(b)))  # all 128 for small sets
    for _ in range(DIRECTION_REPEATS):
        directions = torch.randn(a.shape[1], DIRECTIONS_PER_REPEAT, generator=generator)
        directions /= directions.norm(dim=0, keepdim=True)  # (D, 128), columns of length 1
        for part in directions.split(per_chunk, dim=1):
            total += _wasserstein1_sorted(
                _sorted_projections(a, part), _sorted_projections(b, part)
            )
    return total.item() / (DIRECTION_REPEATS * DIRECTIONS_PER_REPEAT)


def _check_images(real: torch.Tensor, fake: torch.Tensor) -> None:
    """Both (N, C, H, W) floats of the same C, H and W, large enough for one level."""
    for name, images in (("real", real), ("fake", fake)):
        if images.ndim != 4 or not images.is_floating_point() or len(images) == 0:
            raise ValueError(f"sliced_wasserstein: {name} must be float (N, C, H, W) images")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"sliced_wasserstein: real {real.shape[1:]} vs fake {fake.shape[1:]}")
    if min(real.shape[2:]) < MIN_RESOLUTION:
        raise ValueError(f"sliced_wasserstein: images under {MIN_RESOLUTION} px have no level")


def sliced_wasserstein(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """SWD x 1e3 between real (N, C, H, W) and fake (M, C, H, W) float images in [-1, 1].

    Returns "swd_<res>" for each pyramid level (finest first: 64, 32, 16 for 64 px; 28, 14 for
    28 px) and "swd", their mean. Lower is closer; two samples of one distribution give a
    floor above 0 that shrinks as N grows, so compare numbers from equal N.

    The same seed gives the same number, from generators of its own (torch's global random
    state is left alone): one draws the real set's neighbourhoods, one the fake set's, one
    the directions. So calls with one seed and one real set compare every fake set (a
    generator's, the other real half, noise) with the same real patches along the same
    directions, whatever the fake sets' sizes. Runs on the CPU, whatever the inputs' device;
    beyond the images, memory stays near 2 x N x 128 x C x 49 floats (10,000 vs 10,000
    images of 64x64x3: a 3.3 GB peak with the images, 12.5 min on 2 busy cores; 28x28x1:
    1.5 GB, 4.5 min). Sorting the projections takes most of the time.
    """
    _check_images(real, fake)
    real, fake = real.detach().float().cpu(), fake.detach().float().cpu()
    seeds = torch.randint(2**62, (3,), generator=torch.Generator().manual_seed(seed)).tolist()
    real_places, fake_places, directions = (torch.Generator().manual_seed(s) for s in seeds)
    levels = resolutions(min(real.shape[2:]))
    result = {}
    for index, res in enumerate(levels):
        a = _descriptors(real, index, len(levels), real_places)
        b = _descriptors(fake, index, len(levels), fake_places)
        result[f"swd_{res}"] = _sliced_distance(a, b, directions) * SCALE
        del a, b  # the next level's descriptors replace these
    result["swd"] = sum(result.values()) / len(levels)
    return result
