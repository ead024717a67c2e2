"""Quality metrics on inputs whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from gantool.metrics import ks_statistic, moments, wasserstein1


def test_moments_of_a_known_sample() -> None:
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    mean, std, skew, kurt = moments(x)[:, 0].tolist()
    assert mean == pytest.approx(2.5)
    assert std == pytest.approx(math.sqrt(1.25))
    assert skew == pytest.approx(0.0)
    assert kurt == pytest.approx(((1.5**4 + 0.5**4) * 2 / 4) / 1.25**2 - 3)


def test_moments_of_a_large_gaussian() -> None:
    x = torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x * torch.tensor([1.25, 3.0]) + torch.tensor([4.0, -1.0])
    m = moments(x)
    assert m[0].tolist() == pytest.approx([4.0, -1.0], abs=0.02)
    assert m[1].tolist() == pytest.approx([1.25, 3.0], rel=0.01)
    assert m[2:].abs().max() < 0.05


def _normal(n: int, mean: float, std: float, seed: int = 0) -> torch.Tensor:
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return z * std + mean


def test_ks_and_w1_of_the_target_itself_are_near_zero() -> None:
    x = _normal(100_000, 4.0, 1.25)
    assert ks_statistic(x, 4.0, 1.25) < 1.63 / math.sqrt(100_000)  # the 99% critical value
    assert wasserstein1(x, 4.0, 1.25) < 0.01


def test_ks_and_w1_of_a_shifted_gaussian_match_the_analytic_values() -> None:
    d, std = 0.5, 1.25
    x = _normal(100_000, 4.0 + d, std)
    normal_cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    assert ks_statistic(x, 4.0, std) == pytest.approx(2 * normal_cdf(d / (2 * std)) - 1, abs=0.01)
    assert wasserstein1(x, 4.0, std) == pytest.approx(d, abs=0.01)


def test_ks_and_w1_of_a_scaled_gaussian_match_the_analytic_values() -> None:
    x = _normal(100_000, 0.0, 2.0)  # against N(0, 1)
    normal_cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    crossing = math.sqrt(8 * math.log(2) / 3)  # where the two densities' CDF gap is largest
    ks = normal_cdf(crossing) - normal_cdf(crossing / 2)
    assert ks_statistic(x, 0.0, 1.0) == pytest.approx(ks, abs=0.01)
    assert wasserstein1(x, 0.0, 1.0) == pytest.approx(math.sqrt(2 / math.pi), abs=0.01)


def test_a_box_with_the_right_mean_and_std_is_far_in_ks() -> None:
    # The failure the Gaussian default was tuned away from: right moments, wrong shape.
    u = torch.rand(100_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    box = 4.0 + 1.25 * math.sqrt(12) * (u - 0.5)
    assert abs(box.mean().item() - 4.0) < 0.01 and abs(box.std().item() - 1.25) < 0.01
    assert ks_statistic(box, 4.0, 1.25) > 0.05
