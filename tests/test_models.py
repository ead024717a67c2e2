"""The models, the moments feature layer and the losses, on inputs with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gantool import losses
from gantool.config import DiscriminatorConfig
from gantool.metrics import moments
from gantool.models.mlp import Discriminator, activation


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


def test_moments_discriminator_gives_one_logit_per_batch_and_trains() -> None:
    d = Discriminator(
        DiscriminatorConfig(hidden=[10, 10], activation="sigmoid", features="moments"), data_dim=1
    )
    x = torch.randn(500, 1, requires_grad=True)
    logit = d(x)
    assert logit.shape == (1, 1)
    logit.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the samples


@pytest.mark.parametrize("name", ["elu", "leaky_relu", "relu", "tanh", "sigmoid"])
def test_activation_table(name: str) -> None:
    x = torch.linspace(-2, 2, 9)
    expected = {
        "elu": F.elu(x),
        "leaky_relu": F.leaky_relu(x, 0.3),
        "relu": F.relu(x),
        "tanh": torch.tanh(x),
        "sigmoid": torch.sigmoid(x),
    }[name]
    assert torch.allclose(activation(name, 0.3)(x), expected)


def test_losses_match_their_definitions() -> None:
    real, fake = torch.tensor([[2.0], [0.5]]), torch.tensor([[-1.0], [0.3]])
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    expected_d = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    assert losses.d_loss(real, fake).item() == pytest.approx(expected_d.item(), rel=1e-6)
    assert losses.g_loss(fake).item() == pytest.approx(-torch.log(d_fake).mean().item())
    minimax = torch.log(1 - d_fake).mean().item()
    assert losses.g_loss(fake, "minimax").item() == pytest.approx(minimax, rel=1e-6)


def test_losses_are_stable_for_extreme_logits() -> None:
    big = torch.tensor([[1e4], [-1e4]])
    assert torch.isfinite(losses.d_loss(big, -big))
    assert torch.isfinite(losses.g_loss(-big))
    assert torch.isfinite(losses.g_loss(-big, "minimax"))
