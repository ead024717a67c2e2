"""The training step: D's updates, G's updates and the EMA update, in one place.

GANStep runs the step eagerly, or in the graph-safe form a CUDA graph can capture and replay
(graph.py): gradients are then zeroed in place rather than freed, so every replay finds them
at the same addresses, and autocast keeps no cache of cast weights, as torch asks of graphed
autocast. The numbers are the same bit for bit, except under bf16: uncached, D's weights are
cast once per use, so the gradients of its two passes are summed in float32 rather than in
bfloat16. Nothing here reads a value back to the host, so the device never waits on Python.

What each loss computes is its class's (gantool.nn.losses); R1, which any loss may take,
is applied here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gantool.config.schema import Config, ModelConfig
from gantool.nn.losses import Loss, build_loss, r1_penalty
from gantool.nn.mlp import sample_latent, split_classes, with_classes
from gantool.training.gan import GAN

# What a step returns, in order; each row of metrics.jsonl averages them over log_every steps.
STAT_KEYS = (
    "train/d_loss",
    "train/g_loss",
    # D's mean output on real and on generated samples: a probability under bce, else the raw
    # score the loss reads (each loss's `labels` name them).
    "train/d_real",
    "train/d_fake",
    "train/fake_mean",
    "train/fake_std",
)


@dataclass(frozen=True)
class StepSettings:
    """What one training step reads, and nothing more."""

    batch_size: int  # samples G makes per update in this process: its packs x model.d.pack
    d_steps: int
    g_steps: int
    reuse_fake: bool
    g_first: bool
    loss: Loss
    r1_gamma: float
    r1_every: int
    ema_decay: float
    bf16: bool
    model: ModelConfig  # how G's noise is drawn, D's packing, conditional or not

    @classmethod
    def of(cls, cfg: Config, num_processes: int = 1) -> StepSettings:
        t = cfg.trainer
        return cls(
            batch_size=t.batch_size // num_processes * cfg.model.d.pack,
            d_steps=t.d_steps,
            g_steps=t.g_steps,
            reuse_fake=t.reuse_fake,
            g_first=t.g_first,
            loss=build_loss(cfg.loss),
            r1_gamma=cfg.loss.r1_gamma,
            r1_every=cfg.loss.r1_every,
            ema_decay=t.ema_decay,
            bf16=cfg.device.precision == "bf16",
            model=cfg.model,
        )

    def r1_due(self, step: int) -> bool:
        """Whether the step after `step` steps takes the R1 penalty (lazily every r1_every)."""
        return self.r1_gamma > 0 and step % self.r1_every == 0


# G's samples (N, data_dim) and D's input for them: the same, with their class column when the
# model is conditional.
Fakes = tuple[torch.Tensor, torch.Tensor]


class GANStep:
    """One training step of `gan`: d_steps D updates, then g_steps G updates (G's first with
    g_first), then the EMA update. Calling it returns STAT_KEYS as a (6,) tensor.

    With reuse_fake, one network's last fakes are the other's first: G's forward pass and
    noise draw are shared, as the reference GANs' single noise draw per step is.
    """

    def __init__(
        self, gan: GAN, settings: StepSettings, device: torch.device, graph_safe: bool = False
    ):
        self.gan, self.s, self.device, self.graph_safe = gan, settings, device, graph_safe
        self.autocast = torch.autocast(
            device.type, torch.bfloat16, enabled=settings.bf16, cache_enabled=not graph_safe
        )

    def __call__(self, data, r1: bool | None = None) -> torch.Tensor:
        """One step on batches of `data` (a stream); `r1`: whether it takes the R1 penalty
        (lazy R1 skips some steps), by default whenever loss.r1_gamma > 0."""
        s, reuse = self.s, self.s.reuse_fake
        r1 = s.r1_gamma > 0 if r1 is None else r1
        if s.g_first:  # PyTorch-GAN's order: D then judges the fakes G made before it moved
            g_loss, fakes = self.g_updates(None)
            d_loss, real_out, fake_out, fakes = self.d_updates(
                data, r1, fakes if reuse else None, keep_last=False
            )
        else:
            d_loss, real_out, fake_out, fakes = self.d_updates(data, r1, None, keep_last=reuse)
            g_loss, fakes = self.g_updates(fakes if reuse else None)
        if self.gan.ema is not None:
            self.gan.update_ema(s.ema_decay)
        fake = fakes[0]  # (N, data_dim): the last samples G made, for the statistics
        with torch.no_grad():
            return torch.stack(
                [
                    d_loss,
                    g_loss,
                    s.loss.shown(real_out).float().mean(),
                    s.loss.shown(fake_out).float().mean(),
                    fake.float().mean(),
                    fake.float().std(correction=0),
                ]
            )

    def make_fakes(self, keep_graph: bool) -> Fakes:
        """G's samples for fresh noise, and D's input for them. G's graph is kept only for a G
        update."""
        s = self.s
        z = sample_latent(s.batch_size, s.model, self.device)  # (N, latent_dim [+ 1])
        with self.autocast, torch.set_grad_enabled(keep_graph):
            fake = self.gan.generator(z)
        return fake, with_classes(fake, z[:, -1]) if s.model.conditional else fake

    def d_updates(self, data, r1: bool, first: Fakes | None, keep_last: bool):
        """d_steps D updates, each on a fresh real batch; the first judges `first` when given.
        With keep_last, the last one's fresh fakes keep G's graph, for G's first update."""
        for i in range(self.s.d_steps):
            last = i == self.s.d_steps - 1
            result = self.d_update(data, r1, first if i == 0 else None, keep_last and last)
        return result

    def d_update(self, data, r1: bool, fakes: Fakes | None, keep_graph: bool):
        """One D update: real labelled real, G's samples (fresh ones when `fakes` is None)
        labelled fake, plus R1 and the loss's own regulariser."""
        s, optimizer = self.s, self.gan.d_optimizer
        real = data.next_batch()  # (N, data_dim [+ 1])
        real.requires_grad_(r1)  # R1 needs D's gradient with respect to x
        fakes = fakes or self.make_fakes(keep_graph)
        fake_in = fakes[1].detach()  # D's loss must not reach G's weights
        with self.autocast:
            real_out, fake_out = self.judge(real), self.judge(fake_in)  # (N / pack, 1)
        loss = s.loss.d_loss(real_out, fake_out)
        if r1:  # lazily: weighted r1_every times, on one step in r1_every
            r1_term = r1_penalty(real_out, real, s.model.d.pack)
            loss = loss + s.r1_gamma / 2 * s.r1_every * r1_term
        extra = self.regulariser(real.detach(), fake_in)
        if extra is not None:
            loss = loss + extra
        optimizer.zero_grad(set_to_none=not self.graph_safe)
        loss.backward()
        optimizer.step()
        return loss, real_out, fake_out, fakes

    def judge(self, x: torch.Tensor) -> torch.Tensor:
        """D's output for its input rows: augmented first under trainer.augment (real and
        generated alike, differentiably, so G and R1 see through it), the class column kept."""
        augment = self.gan.augment
        if augment is not None:
            if self.s.model.conditional:
                x = with_classes(augment(x[:, :-1]), x[:, -1])
            else:
                x = augment(x)
        return self.gan.discriminator(x)

    def regulariser(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        """The loss's own term for D (WGAN-GP's penalty). It sees samples without their class
        column: each keeps its real sample's class when D judges it."""
        s, D = self.s, self.gan.discriminator
        if s.model.conditional:
            real, classes = split_classes(real)
            fake = fake[:, :-1]

            def judge(x: torch.Tensor) -> torch.Tensor:
                with self.autocast:
                    return D(with_classes(x, classes))
        else:

            def judge(x: torch.Tensor) -> torch.Tensor:
                with self.autocast:
                    return D(x)

        return s.loss.regulariser(judge, real, fake, s.model.d.pack)

    def g_updates(self, first: Fakes | None):
        """g_steps G updates; the first is through `first` when given."""
        D = self.gan.discriminator
        D.requires_grad_(False)  # gradients flow through D to G, but D's own are not needed
        for i in range(self.s.g_steps):
            loss, fakes = self.g_update(first if i == 0 else None)
        D.requires_grad_(True)
        return loss, fakes

    def g_update(self, fakes: Fakes | None):
        """One G update through D's judgement of `fakes`, or of fresh ones when None."""
        optimizer = self.gan.g_optimizer
        fakes = fakes or self.make_fakes(keep_graph=True)
        with self.autocast:
            out = self.judge(fakes[1])  # no detach: G learns through D
        loss = self.s.loss.g_loss(out)
        optimizer.zero_grad(set_to_none=not self.graph_safe)
        loss.backward()
        optimizer.step()
        return loss, fakes
