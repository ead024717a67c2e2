"""The adversarial losses, one class each (`loss.name` picks one from LOSSES), and D's
gradient penalties as pure functions.

D ends in one raw number per sample (a logit under bce); each loss says what it means, what
D and G minimise, what D's output is called in the progress line and the plots, and which
regulariser of its own it adds to D's loss (WGAN-GP's gradient penalty). R1, which any loss
may take (loss.r1_gamma), is applied by the training step.

A new loss is one class here, added to LOSSES, and its configs/loss/<name>.yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F

from gantool.config.schema import LossConfig

Judge = Callable[[torch.Tensor], torch.Tensor]  # D's raw outputs for samples


class Loss:
    """What D and G minimise, given D's raw outputs (N, 1) on real and generated samples."""

    name: ClassVar[str]
    # What D's mean output on real and on generated samples is called (progress line, plots).
    labels: ClassVar[tuple[str, str]] = ("D(x)", "D(G(z))")
    # D's output is shown as a probability in [0, 1] (the plots mark 0.5), else as it is.
    probabilities: ClassVar[bool] = False
    # Its regulariser judges single samples, so D must give one output per sample.
    needs_samples: ClassVar[bool] = False

    def __init__(self, cfg: LossConfig):
        self.cfg = cfg

    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake_out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def shown(self, out: torch.Tensor) -> torch.Tensor:
        """D's outputs as the progress line shows them."""
        return torch.sigmoid(out) if self.probabilities else out

    def regulariser(self, judge: Judge, real: torch.Tensor, fake: torch.Tensor, pack: int):
        """A term of this loss's own for D's loss, or None. `judge` runs D on samples (N, F)
        (adding their classes, when conditional), which it judges in packs of `pack`
        consecutive rows; real and fake are (N, F), detached."""
        return None


class BCE(Loss):
    """D(x) = sigmoid(logit) is the probability that x is real: D learns real=1, fake=0.
    G's loss is non_saturating, -log D(G(z)) (strong gradients early in training), or the
    original minimax log(1 - D(G(z))), minimised, which saturates when D wins."""

    name = "bce"
    probabilities = True

    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        # -log D(x) - log(1 - D(G(z)))
        real = F.binary_cross_entropy_with_logits(real_out, torch.ones_like(real_out))
        fake = F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out))
        return real + fake

    def g_loss(self, fake_out: torch.Tensor) -> torch.Tensor:
        if self.cfg.g_loss == "non_saturating":  # fake labelled real
            return F.binary_cross_entropy_with_logits(fake_out, torch.ones_like(fake_out))
        return -F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out))


class Hinge(Loss):
    """Lim & Ye 2017 (SAGAN, BigGAN): D: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))];
    G: -E[D(G(z))]. D's output is a score, real above +1 and fake below -1."""

    name = "hinge"
    labels = ("score(x)", "score(G(z))")

    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()

    def g_loss(self, fake_out: torch.Tensor) -> torch.Tensor:
        return -fake_out.mean()


class LSGAN(Loss):
    """Least squares (Mao et al. 2017, a = 0, b = c = 1): D: ½E[(D(x) - 1)²] + ½E[D(G(z))²];
    G: ½E[(D(G(z)) - 1)²]. D's output is a regression onto 1 (real) and 0 (fake)."""

    name = "lsgan"

    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        return 0.5 * (real_out - 1).pow(2).mean() + 0.5 * fake_out.pow(2).mean()

    def g_loss(self, fake_out: torch.Tensor) -> torch.Tensor:
        return 0.5 * (fake_out - 1).pow(2).mean()


class WGANGP(Loss):
    """Gulrajani et al. 2017: the critic's E[D(G(z))] - E[D(x)], plus gp_lambda times the
    gradient penalty E[(|∇D(x̂)| - 1)²] on interpolates x̂; G: -E[D(G(z))]. D's output is a
    critic score whose differences estimate the Wasserstein-1 distance."""

    name = "wgan_gp"
    labels = ("critic(x)", "critic(G(z))")
    needs_samples = True

    def d_loss(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        return fake_out.mean() - real_out.mean()

    def g_loss(self, fake_out: torch.Tensor) -> torch.Tensor:
        return -fake_out.mean()

    def regulariser(self, judge: Judge, real: torch.Tensor, fake: torch.Tensor, pack: int):
        mixed = interpolates(real, fake.to(real.dtype), pack).requires_grad_(True)  # (N, F)
        return self.cfg.gp_lambda * gradient_penalty(judge(mixed), mixed)


LOSSES: dict[str, type[Loss]] = {loss.name: loss for loss in (BCE, Hinge, LSGAN, WGANGP)}


def build_loss(cfg: LossConfig) -> Loss:
    """The loss `cfg.name` names (checked against LOSSES when the config was)."""
    return LOSSES[cfg.name](cfg)


def r1_penalty(real_out: torch.Tensor, real: torch.Tensor, pack: int = 1) -> torch.Tensor:
    """R1 (Mescheder et al., 2018): the mean squared norm of D's gradient on real samples,
    each norm taken over what D judges as one (a pack of `pack` consecutive rows).

    `real` must have requires_grad set before D saw it. Penalising D's slope at the data lets
    the game settle instead of circling around the target distribution.
    """
    (grad,) = torch.autograd.grad(real_out.sum(), real, create_graph=True)  # (N, F)
    return grad.reshape(grad.shape[0] // pack, -1).pow(2).sum(dim=1).mean()


def interpolates(real: torch.Tensor, fake: torch.Tensor, pack: int = 1) -> torch.Tensor:
    """x̂ = α x + (1 - α) G(z) with one α ~ U[0, 1) for each sample D judges (each pack of
    `pack` consecutive rows), broadcast over its features: (N, F) from two (N, F)."""
    alpha = torch.rand(real.shape[0] // pack, 1, device=real.device, dtype=real.dtype)
    alpha = alpha.repeat_interleave(pack, dim=0)  # (N, 1): one per pack, the same for its rows
    return torch.lerp(fake, real, alpha)


def gradient_penalty(mixed_out: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's E[(|∇D(x̂)| - 1)²], the norm taken over each sample D judges: D's outputs
    (N / pack, 1) on the interpolates `mixed` (N, F), which must require grad."""
    (grad,) = torch.autograd.grad(mixed_out.sum(), mixed, create_graph=True)  # (N, F)
    per_sample = grad.reshape(mixed_out.shape[0], -1)  # a pack's rows together
    return (per_sample.norm(dim=1) - 1).pow(2).mean()
