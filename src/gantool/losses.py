"""The D and G losses: BCE on logits, as pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D learns real=1 and fake=0: -log D(x) - log(1 - D(G(z)))."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """G's loss on D's logits for generated samples.

    non_saturating: fake labelled real, -log D(G(z)); strong gradients early in training.
    minimax: the original log(1 - D(G(z))), minimised; it saturates when D wins.
    """
    if kind == "non_saturating":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al., 2018): the mean squared norm of D's gradient on real samples.

    `real` must have requires_grad set before D saw it. Penalising D's slope at the data lets
    the game settle instead of circling around the target distribution.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)  # (B, data_dim)
    return grad.pow(2).sum(dim=1).mean()
