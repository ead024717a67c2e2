"""The adversarial losses (`loss.name`) and D's regularisers, as pure functions of D's outputs.

D ends in one raw number per sample (a logit under bce); each loss says what it means:

- bce: D(x) = sigmoid(logit) is the probability that x is real. D learns real=1, fake=0;
  G's loss is non_saturating, -log D(G(z)), or the original minimax log(1 - D(G(z))).
- hinge (Lim & Ye 2017; SAGAN, BigGAN): D: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))];
  G: -E[D(G(z))]. D's output is a score, real above +1 and fake below -1.
- lsgan (Mao et al. 2017, with a = 0, b = c = 1): D: ½E[(D(x) - 1)²] + ½E[D(G(z))²];
  G: ½E[(D(G(z)) - 1)²]. D's output is a regression onto 1 (real) and 0 (fake).
- wgan_gp (Gulrajani et al. 2017): the critic's E[D(G(z))] - E[D(x)], plus
  λ E[(|∇D(x̂)| - 1)²] on interpolates x̂ (gradient_penalty); G: -E[D(G(z))]. D's output is a
  critic score whose differences estimate the Wasserstein-1 distance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# What D's mean output on real and on generated samples is, under each loss: the progress bar's
# and the loss plot's labels for train/d_real and train/d_fake.
OUTPUT_LABELS = {
    "bce": ("D(x)", "D(G(z))"),  # probabilities
    "hinge": ("score(x)", "score(G(z))"),
    "lsgan": ("D(x)", "D(G(z))"),  # regressed onto 1 and 0
    "wgan_gp": ("critic(x)", "critic(G(z))"),
}


def d_loss(kind: str, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
    """D's loss on its outputs (N, 1) for real and generated samples (gradient penalties
    excluded: see gradient_penalty and r1_penalty)."""
    if kind == "bce":  # -log D(x) - log(1 - D(G(z)))
        real = F.binary_cross_entropy_with_logits(real_out, torch.ones_like(real_out))
        fake = F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out))
        return real + fake
    if kind == "hinge":
        return F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()
    if kind == "lsgan":
        return 0.5 * (real_out - 1).pow(2).mean() + 0.5 * fake_out.pow(2).mean()
    if kind == "wgan_gp":
        return fake_out.mean() - real_out.mean()
    raise ValueError(f"unknown loss {kind!r}")


def g_loss(kind: str, fake_out: torch.Tensor, bce_form: str = "non_saturating") -> torch.Tensor:
    """G's loss on D's outputs (N, 1) for generated samples; `bce_form` under bce only.

    non_saturating: fake labelled real, -log D(G(z)); strong gradients early in training.
    minimax: the original log(1 - D(G(z))), minimised; it saturates when D wins.
    """
    if kind == "bce":
        if bce_form == "non_saturating":
            return F.binary_cross_entropy_with_logits(fake_out, torch.ones_like(fake_out))
        return -F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out))
    if kind == "lsgan":
        return 0.5 * (fake_out - 1).pow(2).mean()
    if kind in ("hinge", "wgan_gp"):
        return -fake_out.mean()
    raise ValueError(f"unknown loss {kind!r}")


def probabilities(kind: str, out: torch.Tensor) -> torch.Tensor:
    """D's outputs as the progress bar shows them: probabilities under bce, else as they are."""
    return torch.sigmoid(out) if kind == "bce" else out


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
