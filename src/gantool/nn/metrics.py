"""What quality means per dataset: plain functions of tensors."""

from __future__ import annotations

import torch


def moments(x: torch.Tensor) -> torch.Tensor:
    """Mean, std, skewness and excess kurtosis of each column of x (N, F), as a (4, F) tensor.

    Differentiable, so the moments discriminator can train through it. The std is the
    population one (divide by N), as in the 50-line experiment.
    """
    mean = x.mean(dim=0)
    centred = x - mean  # (N, F)
    std = centred.pow(2).mean(dim=0).sqrt()
    z = centred / std.clamp_min(1e-12)
    skewness = z.pow(3).mean(dim=0)
    excess_kurtosis = z.pow(4).mean(dim=0) - 3.0
    return torch.stack([mean, std, skewness, excess_kurtosis])


def ks_statistic(samples: torch.Tensor, mean: float, std: float) -> float:
    """Kolmogorov–Smirnov statistic of 1-D samples against N(mean, std²): the largest gap
    between their empirical CDF and the target CDF."""
    x = samples.flatten().double().sort().values  # (N,)
    n = len(x)
    cdf = torch.special.ndtr((x - mean) / std)
    above = torch.arange(1, n + 1, dtype=torch.float64) / n - cdf  # F_n just after each sample
    below = cdf - torch.arange(0, n, dtype=torch.float64) / n  # ... and just before it
    return max(above.max().item(), below.max().item())


def wasserstein1(samples: torch.Tensor, mean: float, std: float) -> float:
    """1-Wasserstein distance from 1-D samples to N(mean, std²): the mean gap between the
    sorted samples and the target's quantiles at (i - ½)/N, i.e. the optimal transport cost."""
    x = samples.flatten().double().sort().values  # (N,)
    n = len(x)
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    quantiles = mean + std * torch.special.ndtri(levels)
    return (x - quantiles).abs().mean().item()


def gaussian_report(samples: torch.Tensor, mean: float, std: float) -> dict[str, dict[str, float]]:
    """Generated vs target statistics of 1-D samples (N, 1), for the end-of-run table."""
    got = moments(samples.double()).squeeze(1).tolist()
    got += [ks_statistic(samples, mean, std), wasserstein1(samples, mean, std)]
    want = [mean, std, 0.0, 0.0, 0.0, 0.0]
    names = ["mean", "std", "skewness", "excess_kurtosis", "ks", "w1"]
    return {n: {"generated": g, "target": w} for n, g, w in zip(names, got, want, strict=True)}


# --- image metrics on classifier features (MNIST) ----------------------------------------------


def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (F,) and covariance (F, F) of features (N, F), in float64 (unbiased, N - 1)."""
    x = features.double()
    mean = x.mean(dim=0)
    centred = x - mean  # (N, F)
    return mean, centred.T @ centred / max(1, len(x) - 1)


def frechet_gaussians(
    mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor
) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mean1, cov1) and N(mean2, cov2):
    |mean1 - mean2|² + tr(cov1 + cov2 - 2 (cov1 cov2)^½).

    tr (cov1 cov2)^½ is the sum of the square roots of the eigenvalues of
    cov1^½ cov2 cov1^½, which is symmetric positive semi-definite: two symmetric
    eigendecompositions in float64, with no complex numbers and no rounding to clip but tiny
    negative eigenvalues, which are set to zero.
    """
    mean1, cov1, mean2, cov2 = (t.double() for t in (mean1, cov1, mean2, cov2))
    values, vectors = torch.linalg.eigh(cov1)
    root1 = (vectors * values.clamp_min(0).sqrt()) @ vectors.T  # cov1^½
    middle = root1 @ cov2 @ root1
    middle = (middle + middle.T) / 2  # symmetric up to rounding; make it exactly so
    trace_root = torch.linalg.eigvalsh(middle).clamp_min(0).sqrt().sum()
    distance = (mean1 - mean2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * trace_root
    return max(distance.item(), 0.0)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature matrices a (N, F) and b (M, F).

    It is biased upward by the sampling noise of the fits, roughly in proportion to
    1/N + 1/M: compare values computed from the same numbers of samples.
    """
    return frechet_gaussians(*gaussian_fit(a), *gaussian_fit(b))


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Squared distance from each row of x (N, F) to its k-th nearest other row: (N,)."""
    norms = x.pow(2).sum(dim=1)  # (N,)
    radii = []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]  # (C, F)
        d2 = (norms[start : start + chunk, None] + norms[None] - 2 * part @ x.T).clamp_min(0)
        # The k+1 smallest include the row itself (distance 0, up to rounding).
        radii.append(d2.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _inside_balls(
    queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int
) -> torch.Tensor:
    """For each query (Q, F): is it within the squared radius of at least one centre? (Q,)"""
    centre_norms = centres.pow(2).sum(dim=1)  # (M,)
    inside = []
    for part in queries.split(chunk):
        d2 = part.pow(2).sum(dim=1, keepdim=True) + centre_norms[None] - 2 * part @ centres.T
        inside.append((d2 <= radii[None]).any(dim=1))  # (C,)
    return torch.cat(inside)


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, max_elements: int = 2**24
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of features (N, F), (M, F).

    Each set's manifold is the union of balls around its points, each reaching the point's
    k-th nearest neighbour in the same set. Precision: the share of fake points inside the
    real manifold (are the samples realistic?). Recall: the share of real points inside the
    fake manifold (is the data's variety covered?). Distances are computed in row chunks of
    at most `max_elements` entries, so 10k x 10k features fit in little memory.
    """
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision_recall needs more than k={k} points in each set")
    chunk = max(1, max_elements // max(len(real), len(fake)))
    # Distances do not change under a shift; centring keeps |x|² + |y|² - 2x·y from cancelling.
    centre = real.mean(dim=0)
    real, fake = real - centre, fake - centre
    real_radii = _kth_neighbour_radii(real, k, chunk)
    fake_radii = _kth_neighbour_radii(fake, k, chunk)
    precision = _inside_balls(fake, real, real_radii, chunk).double().mean().item()
    recall = _inside_balls(real, fake, fake_radii, chunk).double().mean().item()
    return precision, recall


def class_coverage(
    predicted: torch.Tensor, num_classes: int = 10, min_share: float = 0.05
) -> tuple[list[float], float, int]:
    """How the predicted classes (N,) of generated samples spread over the classes.

    Returns the share of each class, KL(shares || uniform) in nats (0 when every class is
    equally frequent, ln(num_classes) when all samples are one class), and the number of
    classes with at least `min_share` of the samples. Mode collapse shows in the last two.
    """
    counts = torch.bincount(predicted.flatten().long().cpu(), minlength=num_classes)
    shares = counts.double() / max(1, counts.sum().item())  # (num_classes,)
    kl = torch.xlogy(shares, shares * num_classes).sum().item()  # 0 log 0 = 0
    num_covered = int((shares >= min_share).sum().item())
    return shares.tolist(), kl, num_covered


# --- two-sample comparisons per feature (the user's vectors) -----------------------------------


def _empirical_cdfs(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of a (N, F) and b (M, F): the sorted union of both samples' values
    (N + M, F), and the gap F_a - F_b between their empirical CDFs just after each value."""
    a, b = a.double().sort(dim=0).values, b.double().sort(dim=0).values
    union = torch.cat([a, b]).sort(dim=0).values  # (N + M, F)
    gaps = []
    for j in range(a.shape[1]):  # searchsorted works on rows: one feature at a time
        at = union[:, j].contiguous()
        cdf_a = torch.searchsorted(a[:, j].contiguous(), at, right=True).double() / len(a)
        cdf_b = torch.searchsorted(b[:, j].contiguous(), at, right=True).double() / len(b)
        gaps.append(cdf_a - cdf_b)
    return union, torch.stack(gaps, dim=1)


def ks_per_feature(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two-sample Kolmogorov–Smirnov statistic of each column of a (N, F) against the same
    column of b (M, F): the largest gap between their empirical CDFs. (F,), in [0, 1]."""
    _, gap = _empirical_cdfs(a, b)
    return gap.abs().max(dim=0).values


def wasserstein1_per_feature(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two-sample 1-Wasserstein distance of each column of a (N, F) and b (M, F), in the
    columns' units: the area between their empirical CDFs, ∫ |F_a(x) - F_b(x)| dx. (F,)"""
    union, gap = _empirical_cdfs(a, b)
    widths = union[1:] - union[:-1]  # (N + M - 1, F): both CDFs are flat in between
    return (gap[:-1].abs() * widths).sum(dim=0)
