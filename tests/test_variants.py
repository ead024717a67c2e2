"""GAN variants: the losses (bce, hinge, lsgan, wgan_gp), spectral norm, PacGAN packing,
conditional models, lazy R1 and G-first steps; their numbers, shapes, refusals and resumes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import FAST, compose_config, equal_state, mnist_overrides
from gantool.app.job import train
from gantool.app.sample import sample_checkpoint
from gantool.config.schema import Config, LossConfig
from gantool.core.errors import ConfigError
from gantool.core.files import MetricsLog
from gantool.datasets.registry import training_stream
from gantool.nn import losses
from gantool.nn.losses import LOSSES
from gantool.nn.mlp import (
    Discriminator,
    Generator,
    row_classes,
    sample_latent,
    split_classes,
    with_classes,
)
from gantool.plots.samples import TITLE_BAND
from gantool.runtime.rng import seed_everything
from gantool.training.checkpointer import latest_checkpoint
from gantool.training.codec import load as load_checkpoint
from gantool.training.gan import GAN
from gantool.training.step import GANStep, StepSettings

CPU = torch.device("cpu")
# Small D and G on the Gaussian; no R1 unless a test asks for it.
TINY = [
    *FAST,
    "trainer.batch_size=16",
    "model.g.hidden=[8]",
    "model.d.hidden=[8]",
    "loss.r1_gamma=0",
]
# Small nets on tiny MNIST (see conftest.write_tiny_mnist).
TINY_MNIST = ["model.g.hidden=[16]", "model.d.hidden=[16]", "model.g.batch_norm=false"]


def step_setup(overrides: list[str]) -> tuple[Config, GAN, object, StepSettings]:
    """What Run builds for a train_step, from the real configs: config, GAN, data, settings."""
    cfg = compose_config(overrides)
    seed_everything(cfg.trainer.seed)
    data = training_stream(cfg, CPU)  # batch_size packs of model.d.pack samples, labelled or not
    gan = GAN.build(cfg.model, cfg.optimizer, 0.0, (data.data_dim,), CPU)
    return cfg, gan, data, StepSettings.of(cfg)


def linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


# --- 1. the losses' values on fixed outputs ----------------------------------------------------
REAL, FAKE = [2.0, -1.0], [0.5, -3.0]


def softplus(x: float) -> float:  # -log sigmoid(-x) = log(1 + e^x)
    return math.log1p(math.exp(x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


D_EXPECTED = {
    # -log σ(r) = softplus(-r); -log(1 - σ(f)) = softplus(f)
    "bce": mean(softplus(-r) for r in REAL) + mean(softplus(f) for f in FAKE),
    "hinge": mean([0.0, 2.0]) + mean([1.5, 0.0]),  # relu(1 - r) + relu(1 + f)
    "lsgan": 0.5 * mean([1.0, 4.0]) + 0.5 * mean([0.25, 9.0]),  # ½(r - 1)² + ½f²
    "wgan_gp": mean(FAKE) - mean(REAL),
}
G_EXPECTED = {
    ("bce", "non_saturating"): mean(softplus(-f) for f in FAKE),  # -log σ(f)
    ("bce", "minimax"): -mean(softplus(f) for f in FAKE),  # log(1 - σ(f))
    ("hinge", "non_saturating"): -mean(FAKE),
    ("lsgan", "non_saturating"): 0.5 * mean([0.25, 16.0]),  # ½(f - 1)²
    ("wgan_gp", "non_saturating"): -mean(FAKE),
}


@pytest.mark.parametrize("kind", LOSSES)
def test_d_loss_known_values(kind: str) -> None:
    real, fake = torch.tensor([REAL]).T, torch.tensor([FAKE]).T  # (2, 1)
    value = loss_of(kind).d_loss(real, fake)
    assert value.shape == ()
    assert value.item() == pytest.approx(D_EXPECTED[kind], rel=1e-6)


@pytest.mark.parametrize(("kind", "form"), list(G_EXPECTED))
def test_g_loss_known_values(kind: str, form: str) -> None:
    fake = torch.tensor([FAKE]).T
    value = loss_of(kind, g_loss=form).g_loss(fake)
    assert value.item() == pytest.approx(G_EXPECTED[kind, form], 1e-6)


def loss_of(kind: str, **settings) -> losses.Loss:
    return losses.build_loss(LossConfig(name=kind, **settings))


def test_each_loss_names_and_shows_ds_outputs() -> None:
    assert all(LOSSES[kind].name == kind for kind in LOSSES)
    assert {LOSSES[kind].labels for kind in LOSSES} == {
        ("D(x)", "D(G(z))"),
        ("score(x)", "score(G(z))"),
        ("critic(x)", "critic(G(z))"),
    }
    out = torch.tensor([[0.0], [2.0]])
    assert torch.equal(loss_of("bce").shown(out), torch.sigmoid(out))
    for kind in ("hinge", "lsgan", "wgan_gp"):
        assert torch.equal(loss_of(kind).shown(out), out)
    with pytest.raises(ConfigError, match=r"loss\.name='foo' is not a choice"):
        compose_config([*TINY, "loss.name=foo"])


def test_r1_penalty_of_a_linear_d() -> None:
    w = torch.tensor([[1.0], [2.0]])  # |w|² = 5 for every sample
    real = torch.randn(4, 2, requires_grad=True)
    assert losses.r1_penalty(real @ w, real).item() == pytest.approx(5.0)


def test_r1_penalty_takes_each_norm_over_a_pack() -> None:
    """With packs of 2, D judges (x1, x2) with weights w = (w1, w2): |∇|² = |w1|² + |w2|²."""
    w = torch.tensor([[1.0], [2.0], [2.0], [4.0]])  # 25 per pack of two 2-D rows
    real = torch.randn(4, 2, requires_grad=True)
    out = real.reshape(2, 4) @ w  # (2 packs, 1)
    assert losses.r1_penalty(out, real, pack=2).item() == pytest.approx(25.0)


# --- 2. WGAN-GP: one α per judged sample; the penalty's norm over each ---------------------------
@pytest.mark.parametrize("pack", [1, 2])
def test_interpolates_draw_one_alpha_per_judged_sample(pack: int) -> None:
    torch.manual_seed(0)
    real, fake = torch.zeros(8, 5), torch.ones(8, 5)
    mixed = losses.interpolates(real, fake, pack)  # α·0 + (1 - α)·1 = 1 - α
    assert mixed.shape == (8, 5)
    assert torch.equal(mixed, mixed[:, :1].expand(8, 5))  # constant across features
    alphas = 1 - mixed[:, 0]
    assert ((alphas >= 0) & (alphas < 1)).all()
    per_pack = alphas.reshape(-1, pack)
    assert torch.equal(per_pack, per_pack[:, :1].expand(-1, pack))  # shared within a pack
    assert per_pack[:, 0].unique().numel() == 8 // pack  # and different across packs


def test_gradient_penalty_of_a_linear_critic() -> None:
    w = torch.tensor([[3.0], [4.0]])  # |w| = 5: (5 - 1)² = 16 at any point
    mixed = torch.randn(6, 2, requires_grad=True)
    assert losses.gradient_penalty(mixed @ w, mixed).item() == pytest.approx(16.0)
    # Packed in pairs: D(x) = w · (row 2k, row 2k+1); the gradient norm over the pair is |w| = 5,
    # where per-row norms would be √5 and √20.
    w = torch.tensor([[1.0], [2.0], [2.0], [4.0]])
    out = mixed.reshape(3, 4) @ w  # (3, 1)
    assert losses.gradient_penalty(out, mixed).item() == pytest.approx(16.0)


def test_conditional_wgan_gp_keeps_the_real_classes(tiny_mnist: Path) -> None:
    overrides = mnist_overrides(tiny_mnist, *TINY_MNIST, "model.conditional=true", "loss=wgan_gp")
    _, gan, data, s = step_setup(overrides)
    seen = []
    gan.discriminator.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    GANStep(gan, s, CPU)(data)
    real, fake, mixed = seen[:3]  # D's update: real, fake, interpolates; then G's update
    assert torch.equal(mixed[:, -1], real[:, -1])  # classes: the real sample's, not mixed
    x, x_fake, x_real = mixed[:, :-1], fake[:, :-1], real[:, :-1]  # (N, 784)
    gap = x_real - x_fake
    alpha = ((x - x_fake) * gap).sum(1, keepdim=True) / gap.pow(2).sum(1, keepdim=True)
    assert ((alpha >= 0) & (alpha < 1)).all()  # one α per sample, between fake and real
    torch.testing.assert_close(x, x_fake + alpha * gap)


# --- 3. spectral norm ---------------------------------------------------------------------------
def test_spectral_norm_keeps_each_linear_at_norm_one() -> None:
    # The paper's Adam lr 2e-4 (the Gaussian preset's 2e-3 moves the weights faster than one
    # power iteration per forward follows: σ drifts to 1.1-1.5 within 5 steps, in plain torch
    # too).
    lr = ["optimizer.d.lr=2e-4", "optimizer.g.lr=2e-4"]
    overrides = [*TINY, "model.d.hidden=[32,32]", "model.d.spectral_norm=true", *lr]
    _, gan, data, s = step_setup(overrides)
    for _ in range(5):
        GANStep(gan, s, CPU)(data)
    D = gan.discriminator.eval()  # eval: reading a weight runs no power iteration
    layers = linears(D)
    assert len(layers) == 3
    raw = []
    for layer in layers:
        assert torch.nn.utils.parametrize.is_parametrized(layer, "weight")
        # σ(W / σ̂): the power iteration only underestimates σ, so ≥ 1. Measured ≤ 1.011 over
        # seeds 0-9 after these 5 steps (15 iterations at the start, 3 forwards a step);
        # 0.05 leaves room for BLAS differences and still catches an unnormalised weight.
        sigma = torch.linalg.matrix_norm(layer.weight.detach(), 2).item()
        assert 1 - 1e-5 <= sigma <= 1.05, sigma
        raw.append(torch.linalg.matrix_norm(layer.parametrizations.weight.original, 2).item())
    assert max(abs(r - 1) for r in raw) > 0.3  # the raw weights are not at norm 1 themselves
    keys = D.state_dict().keys()  # the power iteration's vectors are in checkpoints
    assert {"net.0.parametrizations.weight.0._u", "net.0.parametrizations.weight.0._v"} <= keys


# --- 4. packing ---------------------------------------------------------------------------------
def test_a_packed_d_judges_pack_samples_side_by_side() -> None:
    cfg = compose_config([*TINY, "model.d.pack=3"])
    D = Discriminator(cfg.model, 5)
    assert linears(D)[0].in_features == 3 * 5
    x = torch.randn(12, 5)
    assert D(x).shape == (4, 1)
    # Pack k is samples 3k, 3k+1, 3k+2: D's score of a pack moves only with its own samples.
    y = x.clone()
    y[4] += 1.0
    changed = (D(x) != D(y)).flatten().tolist()
    assert changed == [False, True, False, False]


def test_a_packed_step_reads_batch_size_times_pack_samples() -> None:
    _, gan, data, s = step_setup([*TINY, "trainer.batch_size=8", "model.d.pack=2"])
    assert s.batch_size == 16 and data.next_batch().shape == (16, 1)
    inputs, outputs, g_out = [], [], []

    def d_hook(module, args, out) -> None:
        inputs.append(args[0].shape)
        outputs.append(out.shape)

    gan.discriminator.register_forward_hook(d_hook)
    gan.generator.register_forward_hook(lambda m, args, out: g_out.append(out.shape))
    GANStep(gan, s, CPU)(data)
    assert inputs == [(16, 1)] * 3  # real, fake; G's update
    assert outputs == [(8, 1)] * 3  # batch_size packs
    # G makes as many samples as D reads real ones, once: the Gaussian preset reuses them
    assert g_out == [(16, 1)] and s.reuse_fake


# --- 5. conditional models ----------------------------------------------------------------------
def conditional_config(tiny_mnist: Path, *extra: str) -> Config:
    return compose_config(mnist_overrides(tiny_mnist, "model.conditional=true", *extra))


def test_conditional_noise_nets_and_row_classes(tiny_mnist: Path) -> None:
    cfg = conditional_config(tiny_mnist, *TINY_MNIST)
    m = cfg.model
    torch.manual_seed(0)
    z = sample_latent(200, m, CPU)
    assert z.shape == (200, m.latent_dim + 1)
    classes = z[:, -1]
    assert torch.equal(classes, classes.round()) and set(classes.long().tolist()) == set(range(10))
    asked = torch.arange(7) % 10
    z = sample_latent(7, m, CPU, classes=asked)
    noise, kept = split_classes(z)
    assert noise.shape == (7, m.latent_dim) and torch.equal(kept, asked)
    assert torch.equal(with_classes(noise, kept), z)

    G, D = Generator(m, 784).eval(), Discriminator(m, 784).eval()
    fake = G(z)
    assert fake.shape == (7, 784)
    assert D(with_classes(fake, kept)).shape == (7, 1)
    # The class column is read: the same noise as another class gives another sample and score.
    other = with_classes(noise, (kept + 1) % 10)
    assert not torch.equal(G(other), fake)
    assert not torch.equal(D(with_classes(fake, kept)), D(with_classes(fake, (kept + 1) % 10)))

    assert torch.equal(row_classes(100, 10, CPU), torch.arange(10).repeat_interleave(10))
    assert row_classes(64, 10, CPU).tolist() == [i * 10 // 64 for i in range(64)]


def test_conditional_preset_trains_on_tiny_mnist(tmp_path: Path, tiny_mnist: Path) -> None:
    overrides = [
        "experiment=cgan_mnist",
        "trainer.epochs=null",
        "model.g.hidden=[16,32]",
        "model.d.hidden=[16,16]",
        "trainer.num_eval_samples=64",
    ]
    cfg = compose_config(mnist_overrides(tiny_mnist, *overrides))
    assert cfg.model.conditional and cfg.loss.name == "lsgan" and cfg.trainer.g_first
    summary = train(cfg, tmp_path)
    assert summary["step"] == 6
    accuracy = summary["eval"]["eval/conditional_accuracy"]
    assert 0 <= accuracy <= 1
    # The picture: 10 x 10 digits of the fixed noise, one class per row.
    assert Image.open(summary["samples"]).size == (604 + 24, 640)  # and a band for the labels
    state = load_checkpoint(latest_checkpoint(tmp_path))
    fixed = state.fixed_noise
    assert fixed.shape == (100, 101)
    assert torch.equal(fixed[:, -1].long(), row_classes(100, 10, CPU))

    # 64 samples of 10 classes: still one labelled row per class (of 6 or 7), not an 8 x 8
    # grid that splits classes across rows.
    out = tmp_path / "s.png"
    sample_checkpoint(tmp_path, 64, out, seed=0, device_name="cpu")
    scale = 3  # 7 digits of 30 pixels and 2 of margin, enlarged to at least 480 wide
    assert Image.open(out).size == (24 + (7 * 30 + 2) * scale, TITLE_BAND + (10 * 30 + 2) * scale)


# --- 6. every variant resumes exactly -----------------------------------------------------------
VARIANTS = {
    "hinge": ["loss=hinge"],
    "lsgan": ["loss=lsgan"],
    "wgan_gp, 2 critic steps": ["loss=wgan_gp", "trainer.d_steps=2"],
    "spectral norm": ["model.d.spectral_norm=true"],
    "pack 2": ["model.d.pack=2"],
    "lazy R1": ["loss.r1_gamma=1", "loss.r1_every=3"],
    "conditional mnist": ["MNIST", "model.conditional=true"],
    "g_first, reuse_fake": ["trainer.g_first=true", "trainer.reuse_fake=true"],
}
N = 4  # steps before the resume; the full run trains 2N


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_resumes_exactly(tmp_path: Path, tiny_mnist: Path, variant: str) -> None:
    extra = VARIANTS[variant]
    # Pictures and plots at the end only; rows at 3 and 6 fall on both sides of the resume.
    quiet = ["trainer.eval_at_end=false", "trainer.log_every=3", "trainer.sample_every=100"]
    if extra[0] == "MNIST":
        base = mnist_overrides(tiny_mnist, *TINY_MNIST, *extra[1:], *quiet)
    else:
        base = [*TINY, "trainer.num_samples=64", "trainer.ema_decay=0.5", *extra, *quiet]
    whole = compose_config([*base, f"trainer.steps={2 * N}"])
    full, split = tmp_path / "full", tmp_path / "split"
    train(whole, full)
    train(compose_config([*base, f"trainer.steps={N}"]), split)  # stops between log rows
    assert train(whole, split)["step"] == 2 * N

    a, b = (load_checkpoint(latest_checkpoint(run)) for run in (full, split))
    assert a.step == b.step == 2 * N
    assert a.gan.keys() == b.gan.keys()
    for part in a.gan:
        assert equal_state(a.gan[part], b.gan[part]), part
    for key in ("rng", "stream", "stats_sum", "stats_count"):
        assert equal_state(getattr(a, key), getattr(b, key)), key
    assert MetricsLog(full / "metrics.jsonl").rows() == MetricsLog(split / "metrics.jsonl").rows()


# --- 7. lazy R1 ---------------------------------------------------------------------------------
def test_lazy_r1_is_due_every_r1_every_steps(tmp_path: Path, monkeypatch) -> None:
    s = StepSettings.of(compose_config([*TINY, "loss.r1_gamma=1", "loss.r1_every=3"]))
    assert [s.r1_due(step) for step in range(8)] == [True, False, False] * 2 + [True, False]
    off = StepSettings.of(compose_config([*TINY, "loss.r1_every=3"]))  # r1_gamma=0
    assert not any(off.r1_due(step) for step in range(8))

    # A run takes it on exactly those steps, counted from the first step of the run.
    taken, real_step = [], GANStep.__call__

    def recording(self, data, r1=None):
        taken.append(r1)
        return real_step(self, data, r1=r1)

    monkeypatch.setattr(GANStep, "__call__", recording)
    cfg = compose_config([*TINY, "loss.r1_gamma=1", "loss.r1_every=3", "trainer.steps=7"])
    train(cfg, tmp_path)
    assert taken == [True, False, False, True, False, False, True]


class GradientRecorder:
    """Stands in for D's optimizer: keeps the gradients of its first step, changes nothing."""

    def __init__(self, params):
        self.params, self.grads = list(params), None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        if self.grads is None:
            self.grads = [p.grad.clone() for p in self.params]


def d_gradients(r1_every: int, r1: bool) -> list[torch.Tensor]:
    """D's gradient in the first D update of a step from the same start, noise and data."""
    _, gan, data, s = step_setup([*TINY, "loss.r1_gamma=2", f"loss.r1_every={r1_every}"])
    gan.d_optimizer = GradientRecorder(gan.discriminator.parameters())
    torch.manual_seed(1)
    GANStep(gan, s, CPU)(data, r1=r1)
    return gan.d_optimizer.grads


def test_a_lazy_r1_step_weighs_the_penalty_r1_every_times() -> None:
    plain = d_gradients(1, r1=False)
    every_step = d_gradients(1, r1=True)
    lazy = d_gradients(3, r1=True)
    assert not torch.equal(plain[0], every_step[0])  # the penalty moves D's gradient
    for p, one, three in zip(plain, every_step, lazy, strict=True):
        torch.testing.assert_close(three - p, 3 * (one - p), rtol=1e-5, atol=1e-6)
    # Off-steps take no penalty at all: r1_every does not matter without it.
    for p, q in zip(plain, d_gradients(3, r1=False), strict=True):
        assert torch.equal(p, q)


# --- 8. refusals --------------------------------------------------------------------------------
REFUSALS = {
    "unknown loss": (["loss.name=foo"], r"loss\.name='foo' is not a choice: expected one of bce"),
    "unknown loss option": (["loss=foo"], r"loss"),
    "pack 0": (["model.d.pack=0"], r"model\.d\.pack=0: must be >= 1"),
    "pack with moments": (
        ["model.d.pack=2", "model.d.features=moments"],
        r"model\.d\.pack=2: packing needs model\.d\.features=samples",
    ),
    "wgan_gp with moments": (
        ["loss=wgan_gp", "model.d.features=moments"],
        r"loss=wgan_gp: its gradient penalty is taken per sample",
    ),
    "conditional gaussian": (
        ["model.conditional=true"],
        r"model\.conditional=true: the gaussian dataset has no class labels",
    ),
    "conditional with pack": (
        ["dataset=mnist", "model.conditional=true", "model.d.pack=2"],
        r"model\.d\.pack=2: a conditional D judges single samples",
    ),
    "conditional with moments": (
        ["dataset=mnist", "model.conditional=true", "model.d.features=moments"],
        r"model\.d\.features=moments: a conditional D judges single samples",
    ),
    "too many classes": (
        ["dataset=mnist", "model.conditional=true", "model.num_classes=11"],
        r"model\.num_classes=11: the mnist dataset has 10 classes",
    ),
    "too few classes": (  # the labels would index past G's and D's embeddings
        ["dataset=mnist", "model.conditional=true", "model.num_classes=5"],
        r"model\.num_classes=5: .* a conditional model takes them all",
    ),
    "r1_every 0": (["loss.r1_every=0"], r"loss\.r1_every=0: must be >= 1"),
    "negative gp_lambda": (["loss.gp_lambda=-1"], r"loss\.gp_lambda=-1\.0: must be >= 0"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_variant_settings_are_refused_in_one_line(case: str) -> None:
    overrides, message = REFUSALS[case]
    with pytest.raises(ConfigError, match=message) as refused:
        compose_config([*FAST, *overrides])
    assert "\n" not in str(refused.value)


# --- 9. G first, with reuse_fake ----------------------------------------------------------------
@pytest.mark.parametrize("reuse", [True, False])
def test_g_first_d_judges_the_fakes_of_gs_update(reuse: bool) -> None:
    overrides = [*TINY, "trainer.g_first=true", f"trainer.reuse_fake={str(reuse).lower()}"]
    _, gan, data, s = step_setup(overrides)
    made, judged = [], []
    gan.generator.register_forward_hook(lambda m, args, out: made.append(out.detach().clone()))
    gan.discriminator.register_forward_pre_hook(lambda m, args: judged.append(args[0].detach()))
    GANStep(gan, s, CPU)(data)
    assert len(made) == (1 if reuse else 2)  # G's forward passes in the step
    assert len(judged) == 3  # G's update, then D's: real, fake
    assert torch.equal(judged[0], made[0])  # G's update judges G's first fakes
    # D's update judges the very fakes of G's update (made before G moved), or fresh ones.
    assert torch.equal(judged[2], made[0]) is reuse
    if not reuse:
        assert torch.equal(judged[2], made[1])


def test_the_wgan_gp_variant_takes_each_datasets_penalty_weight() -> None:
    """λ = 0.1 on the toy sets (the WGAN-GP authors' gan_toy.py), 10 on images; 5 critic
    updates and no R1 beside the penalty, whatever the dataset's R1."""
    for dataset, weight in (("gaussian", 0.1), ("ring", 0.1), ("grid", 0.1), ("mnist", 10.0)):
        loss = compose_config([f"dataset={dataset}", "variant=wgan_gp"]).loss
        assert (loss.name, loss.gp_lambda, loss.r1_gamma) == ("wgan_gp", weight, 0.0), dataset
    assert compose_config(["variant=wgan_gp"]).trainer.d_steps == 5
