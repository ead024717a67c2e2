"""The models, the moments feature layer and the losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gantool.config.schema import DiscriminatorConfig, LossConfig, ModelConfig
from gantool.nn import losses
from gantool.nn.mlp import Discriminator, activation


def test_moments_discriminator_gives_one_logit_per_batch_and_trains() -> None:
    moments = DiscriminatorConfig(hidden=[10, 10], activation="sigmoid", features="moments")
    d = Discriminator(ModelConfig(d=moments), data_dim=1)
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
    bce = losses.BCE(LossConfig())
    assert bce.d_loss(real, fake).item() == pytest.approx(expected_d.item(), rel=1e-6)
    assert bce.g_loss(fake).item() == pytest.approx(-torch.log(d_fake).mean().item())
    minimax = torch.log(1 - d_fake).mean().item()
    assert losses.BCE(LossConfig(g_loss="minimax")).g_loss(fake).item() == pytest.approx(
        minimax, rel=1e-6
    )


def test_losses_are_stable_for_extreme_logits() -> None:
    big = torch.tensor([[1e4], [-1e4]])
    for kind in ("bce", "hinge", "lsgan", "wgan_gp"):
        loss = losses.build_loss(LossConfig(name=kind))
        assert torch.isfinite(loss.d_loss(big, -big))
        assert torch.isfinite(loss.g_loss(-big))
    assert torch.isfinite(losses.BCE(LossConfig(g_loss="minimax")).g_loss(-big))
