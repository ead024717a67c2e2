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


def gaussian_report(samples: torch.Tensor, mean: float, std: float) -> dict[str, dict[str, float]]:
    """Generated vs target statistics of 1-D samples (N, 1), for the end-of-run table."""
    got = moments(samples.double()).squeeze(1).tolist()
    want = [mean, std, 0.0, 0.0]
    names = ["mean", "std", "skewness", "excess_kurtosis"]
    return {n: {"generated": g, "target": w} for n, g, w in zip(names, got, want, strict=True)}
