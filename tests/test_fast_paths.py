"""The fast paths of the step give the results of the plain ones: same seed, same losses."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import FAST, compose_config
from gantool.datasets.registry import family
from gantool.nn.optim import build_optimizer
from gantool.runtime.rng import seed_everything
from gantool.training.gan import GAN
from gantool.training.step import STAT_KEYS, GANStep, StepSettings

CPU = torch.device("cpu")


def first_steps(overrides: list[str], num: int = 3) -> tuple[torch.Tensor, GAN]:
    """STAT_KEYS of the first `num` steps (num, 6), from a fresh seeded start."""
    cfg = compose_config([*FAST, *overrides])
    seed_everything(cfg.trainer.seed)
    data = family(cfg.dataset).stream(cfg.dataset, cfg.trainer.batch_size, cfg.trainer.seed, CPU)
    gan = GAN.build(cfg.model, cfg.optimizer, cfg.trainer.ema_decay, (data.data_dim,), CPU)
    return torch.stack([GANStep(gan, StepSettings.of(cfg), CPU)(data) for _ in range(num)]), gan


D_LOSS, G_LOSS = STAT_KEYS.index("train/d_loss"), STAT_KEYS.index("train/g_loss")


@pytest.mark.parametrize("dataset", [[], ["experiment=seed_gaussian", "trainer.batch_size=50"]])
def test_reusing_the_fakes_keeps_the_first_d_loss(dataset: list[str]) -> None:
    plain, _ = first_steps([*dataset, "trainer.reuse_fake=false"])
    reused, _ = first_steps([*dataset, "trainer.reuse_fake=true"])
    # The D update is the same computation; the G update then sees other noise.
    assert plain[0, D_LOSS] == reused[0, D_LOSS]
    assert plain[0, G_LOSS] != reused[0, G_LOSS]
    assert torch.isfinite(reused).all()


def test_reused_fakes_are_the_d_updates_fakes() -> None:
    """With reuse, G's loss is computed on the very batch D just saw as fake."""
    cfg = compose_config([*FAST, "trainer.reuse_fake=true", "loss.r1_gamma=0"])
    seed_everything(0)
    data = family(cfg.dataset).stream(cfg.dataset, cfg.trainer.batch_size, 0, CPU)
    gan = GAN.build(cfg.model, cfg.optimizer, cfg.trainer.ema_decay, (data.data_dim,), CPU)
    seen = []
    gan.discriminator.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    GANStep(gan, StepSettings.of(cfg), CPU)(data)
    real, fake_for_d, fake_for_g = seen
    assert torch.equal(fake_for_d, fake_for_g) and not torch.equal(real, fake_for_d)


def test_d_trains_only_in_its_own_update() -> None:
    cfg = compose_config(FAST)
    data = family(cfg.dataset).stream(cfg.dataset, cfg.trainer.batch_size, 0, CPU)
    gan = GAN.build(cfg.model, cfg.optimizer, cfg.trainer.ema_decay, (data.data_dim,), CPU)
    D = gan.discriminator
    at_d_update = []
    step = gan.d_optimizer.step
    gan.d_optimizer.step = lambda: (
        at_d_update.append([p.grad.clone() for p in D.parameters()]),
        step(),
    )
    GANStep(gan, StepSettings.of(cfg), CPU)(data)
    assert all(p.requires_grad for p in D.parameters())  # switched back on after G's update
    # G's update computed no gradients for D: D's are still those of its own update.
    for g, p in zip(at_d_update[-1], D.parameters(), strict=True):
        assert torch.equal(g, p.grad)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_fused_optimizers_match_the_plain_ones(name: str) -> None:
    cfg = compose_config(["optimizer=sgd" if name == "sgd" else "optimizer=adam"]).optimizer.g
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 4)
    b = copy.deepcopy(a)
    fused = build_optimizer(a.parameters(), cfg)
    assert fused.defaults["fused"] is True
    if name == "sgd":
        plain = torch.optim.SGD(b.parameters(), lr=cfg.lr, momentum=cfg.momentum, foreach=False)
    else:
        plain = torch.optim.Adam(b.parameters(), lr=cfg.lr, betas=cfg.betas, foreach=False)
    for _ in range(5):
        x = torch.randn(16, 8)
        for net, opt in ((a, fused), (b, plain)):
            opt.zero_grad(set_to_none=True)
            net(x).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_runs_and_stays_close() -> None:
    fp32, _ = first_steps(["loss.r1_gamma=0"], num=1)
    bf16, _ = first_steps(["loss.r1_gamma=0", "device.precision=bf16"], num=1)
    assert torch.isfinite(bf16).all()
    # Before any update both runs score the same networks on the same batch.
    torch.testing.assert_close(bf16[0, D_LOSS], fp32[0, D_LOSS], rtol=2e-2, atol=2e-2)
