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
