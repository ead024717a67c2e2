"""Quality metrics on inputs whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from gantool.nn.metrics import (
    class_coverage,
    frechet_distance,
    frechet_gaussians,
    ks_statistic,
    moments,
    precision_recall,
    wasserstein1,
)


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


# --- Fréchet distance ---------------------------------------------------------------------------


def _rotation(dim: int, seed: int = 0) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.linalg.qr(a).Q


def test_frechet_of_identical_features_is_zero() -> None:
    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0)) * 3 + 1
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_of_gaussians_with_shared_axes_is_analytic() -> None:
    # On common eigenvectors, tr(S1 + S2 - 2 (S1 S2)^½) = sum of (sqrt(a_i) - sqrt(b_i))².
    q = _rotation(6)
    a = torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0, 0.0], dtype=torch.float64)  # one singular axis
    b = torch.tensor([4.0, 2.0, 1.0, 0.5, 9.0, 1.0], dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.0, 0.5, 0.0], dtype=torch.float64)
    want = shift.pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()
    got = frechet_gaussians(shift, q @ a.diag() @ q.T, torch.zeros(6), q @ b.diag() @ q.T)
    # sqrt is steep at 0: the singular axis's rounding (1e-16) costs up to 1e-8 in the root.
    assert got == pytest.approx(want.item(), abs=1e-6)


def test_frechet_of_non_commuting_covariances_matches_the_product_route() -> None:
    # An independent route: tr (S1 S2)^½ from the (non-symmetric) product's eigenvalues.
    s1 = (
        _rotation(5, 1)
        @ torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).double().diag()
        @ _rotation(5, 1).T
    )
    s2 = (
        _rotation(5, 2)
        @ torch.tensor([0.1, 1.0, 2.0, 7.0, 3.0]).double().diag()
        @ _rotation(5, 2).T
    )
    root_trace = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    want = (s1.trace() + s2.trace() - 2 * root_trace).item()
    zero = torch.zeros(5)
    assert frechet_gaussians(zero, s1, zero, s2) == pytest.approx(want, rel=1e-9)
    assert frechet_gaussians(zero, s2, zero, s1) == pytest.approx(want, rel=1e-9)


def test_frechet_of_shifted_and_scaled_gaussian_samples_is_near_the_analytic_value() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, 4, generator=g, dtype=torch.float64)
    y = torch.randn(200_000, 4, generator=g, dtype=torch.float64) * 2.0 + torch.tensor([1, 0, 0, 0])
    # |Δμ|² + 4 (1 - 2)²: shift 1 along one axis, std 1 -> 2 along all four.
    assert frechet_distance(x, y) == pytest.approx(1.0 + 4.0, abs=0.05)
    assert frechet_distance(x, x[:, [1, 0, 3, 2]]) < 1e-3  # the same Gaussian, resampled


# --- precision and recall -----------------------------------------------------------------------


def _cloud(n: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_precision_recall_of_identical_sets_is_one() -> None:
    x = _cloud(500)
    assert precision_recall(x, x, k=3) == (1.0, 1.0)


def test_precision_recall_of_far_apart_clusters_is_zero() -> None:
    assert precision_recall(_cloud(300), _cloud(300, seed=1) + 100.0, k=3) == (0.0, 0.0)


def test_a_subset_has_full_precision_and_partial_recall() -> None:
    real = _cloud(2000, dim=2)
    fake = real[real[:, 0] < 0]  # one half-plane of the data: realistic but not varied
    precision, recall = precision_recall(real, fake, k=3)
    assert precision == 1.0
    assert 0.4 < recall < 0.7


def test_precision_recall_does_not_depend_on_the_chunk_size() -> None:
    real, fake = _cloud(700), _cloud(500, seed=1) * 1.3
    whole = precision_recall(real, fake, k=3)
    assert precision_recall(real, fake, k=3, max_elements=20_000) == whole
    assert 0.0 < whole[0] < 1.0 and 0.0 < whole[1] < 1.0


def test_precision_recall_needs_more_points_than_k() -> None:
    with pytest.raises(ValueError, match="more than k=3"):
        precision_recall(_cloud(3), _cloud(10), k=3)


# --- class coverage -----------------------------------------------------------------------------


def test_uniform_predictions_cover_every_class() -> None:
    shares, kl, num_covered = class_coverage(torch.arange(1000) % 10)
    assert shares == pytest.approx([0.1] * 10)
    assert kl == pytest.approx(0.0, abs=1e-12)
    assert num_covered == 10


def test_mode_collapse_onto_one_digit() -> None:
    shares, kl, num_covered = class_coverage(torch.full((500,), 7))
    assert shares[7] == 1.0 and sum(shares) == 1.0
    assert kl == pytest.approx(math.log(10))
    assert num_covered == 1


def test_a_class_at_exactly_min_share_counts_as_covered() -> None:
    predicted = torch.tensor([0] * 50 + [1] * 45 + [2] * 5)  # shares 0.5, 0.45, 0.05
    _, kl, num_covered = class_coverage(predicted, min_share=0.05)
    assert num_covered == 3
    want = sum(p * math.log(p * 10) for p in (0.5, 0.45, 0.05))
    assert kl == pytest.approx(want)
