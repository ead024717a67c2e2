"""The training step and the loop. The run folder, checkpoints, pictures and the evaluation
have homes of their own (run_folder.py, checkpoint.py, data/, finish.py)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gantool import distributed, graph, losses
from gantool.checkpoint import Checkpointer
from gantool.config import Config, ModelConfig, run_length, to_dict
from gantool.console import ProgressBar
from gantool.data import family, training_stream
from gantool.device import SMALL_MODEL, auto_device, resolve_device
from gantool.errors import GantoolError, Interrupted, first_line
from gantool.gan import GAN
from gantool.models import generate, row_classes, sample_latent, with_classes
from gantool.preflight import check_not_done
from gantool.rng import rng_state, seed_everything
from gantool.run_folder import RunFolder
from gantool.signals import StopRequest

log = logging.getLogger(__name__)

# What train_step returns, in order; each row of metrics.jsonl averages them over log_every steps.
STAT_KEYS = (
    "train/d_loss",
    "train/g_loss",
    # D's mean output on real and on generated samples: a probability under bce, else the raw
    # score the loss reads (losses.OUTPUT_LABELS names them for each loss).
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
    loss: str  # loss.name
    g_loss: str  # bce's G loss form
    r1_gamma: float
    r1_every: int
    gp_lambda: float
    bf16: bool
    model: ModelConfig  # how G's noise is drawn, D's packing, conditional or not

    @classmethod
    def of(cls, cfg: Config, num_processes: int = 1) -> StepSettings:
        t, loss = cfg.trainer, cfg.loss
        return cls(
            batch_size=t.batch_size // num_processes * cfg.model.d.pack,
            d_steps=t.d_steps,
            g_steps=t.g_steps,
            reuse_fake=t.reuse_fake,
            g_first=t.g_first,
            loss=loss.name,
            g_loss=loss.g_loss,
            r1_gamma=loss.r1_gamma,
            r1_every=loss.r1_every,
            gp_lambda=loss.gp_lambda,
            bf16=cfg.device.precision == "bf16",
            model=cfg.model,
        )

    def r1_due(self, step: int) -> bool:
        """Whether the step after `step` steps takes the R1 penalty (lazily every r1_every)."""
        return self.r1_gamma > 0 and step % self.r1_every == 0


def train_step(
    gan: GAN,
    data,
    s: StepSettings,
    device: torch.device,
    graph_safe: bool = False,
    r1: bool | None = None,
) -> torch.Tensor:
    """One step: d_steps D updates, then g_steps G updates (G's first with g_first). Returns
    STAT_KEYS as a (6,) tensor. `r1`: whether this step takes the R1 penalty (lazy R1 skips
    some); by default whenever loss.r1_gamma > 0.

    Nothing here reads a value back to the host, so the device never waits on Python.
    `graph_safe` (gantool.graph): the form a CUDA graph can capture and replay. Gradients are
    zeroed in place rather than freed, so every replay finds them at the same addresses, and
    autocast keeps no cache of cast weights, as torch asks of graphed autocast. The numbers are
    the same bit for bit, except under bf16: uncached, D's weights are cast once per use, so the
    gradients of its two passes are summed in float32 rather than in bfloat16.
    """
    G, D = gan.generator, gan.discriminator
    autocast = torch.autocast(
        device.type, torch.bfloat16, enabled=s.bf16, cache_enabled=not graph_safe
    )
    r1 = s.r1_gamma > 0 if r1 is None else r1

    def make_fakes(keep_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """G's samples (N, data_dim) for fresh noise, and D's input for them (with their class
        column when conditional). G's graph is kept only for a G update."""
        z = sample_latent(s.batch_size, s.model, device)  # (N, latent_dim [+ 1])
        with autocast, torch.set_grad_enabled(keep_graph):
            fake = G(z)
        return fake, with_classes(fake, z[:, -1]) if s.model.conditional else fake

    def d_update(fakes, keep_graph: bool = False):
        """One D update on a fresh real batch, judging `fakes`, or fresh ones when None."""
        real = data.next_batch()  # (N, data_dim [+ 1])
        real.requires_grad_(r1)  # R1 needs D's gradient with respect to x
        fakes = fakes or make_fakes(keep_graph)
        fake_in = fakes[1].detach()  # D's loss must not reach G's weights
        with autocast:
            real_out, fake_out = D(real), D(fake_in)  # (N / pack, 1); (1, 1) on moments
        loss = losses.d_loss(s.loss, real_out, fake_out)
        if r1:  # lazily: weighted r1_every times, on one step in r1_every
            r1_term = losses.r1_penalty(real_out, real, s.model.d.pack)
            loss = loss + s.r1_gamma / 2 * s.r1_every * r1_term
        if s.loss == "wgan_gp":
            mixed = losses.interpolates(real.detach(), fake_in.to(real.dtype), s.model.d.pack)
            if s.model.conditional:  # classes are not mixed: each keeps the real sample's
                mixed = with_classes(mixed[:, :-1], real.detach()[:, -1])
            mixed.requires_grad_(True)
            with autocast:
                mixed_out = D(mixed)
            loss = loss + s.gp_lambda * losses.gradient_penalty(mixed_out, mixed)
        gan.d_optimizer.zero_grad(set_to_none=not graph_safe)
        loss.backward()
        gan.d_optimizer.step()
        return loss, real_out, fake_out, fakes

    def g_update(fakes):
        """One G update through D's judgement of `fakes`, or of fresh ones when None."""
        fakes = fakes or make_fakes(keep_graph=True)
        with autocast:
            out = D(fakes[1])  # no detach: G learns through D
        loss = losses.g_loss(s.loss, out, s.g_loss)
        gan.g_optimizer.zero_grad(set_to_none=not graph_safe)
        loss.backward()
        gan.g_optimizer.step()
        return loss, fakes

    def d_updates(first, keep_last: bool):
        """d_steps D updates; the first judges `first` when given. With keep_last, the last
        one's fresh fakes keep G's graph, for G's first update to reuse."""
        for i in range(s.d_steps):
            last = i == s.d_steps - 1
            result = d_update(first if i == 0 else None, keep_graph=keep_last and last)
        return result

    def g_updates(first):
        """g_steps G updates; the first is through `first` when given."""
        D.requires_grad_(False)  # gradients flow through D to G, but D's own are not needed
        for i in range(s.g_steps):
            loss, fakes = g_update(first if i == 0 else None)
        D.requires_grad_(True)
        return loss, fakes

    # With reuse_fake, one network's last fakes are the other's first: G's forward pass and
    # noise draw are shared, as the reference GANs' single noise draw per step is.
    reuse = s.reuse_fake
    if s.g_first:  # PyTorch-GAN's order: D then judges the fakes G made before it moved
        g_loss, fakes = g_updates(None)
        d_loss, real_out, fake_out, fakes = d_updates(fakes if reuse else None, keep_last=False)
    else:
        d_loss, real_out, fake_out, fakes = d_updates(None, keep_last=reuse)
        g_loss, fakes = g_updates(fakes if reuse else None)
    fake = fakes[0]  # (N, data_dim): the last samples G made, for the statistics

    with torch.no_grad():
        return torch.stack(
            [
                d_loss,
                g_loss,
                losses.probabilities(s.loss, real_out).float().mean(),
                losses.probabilities(s.loss, fake_out).float().mean(),
                fake.float().mean(),
                fake.float().std(correction=0),
            ]
        )


def train(cfg: Config, run_dir: Path) -> dict:
    """Train (or resume, if run_dir holds checkpoints) and return the run's summary.

    Every failure a user can act on comes out as a GantoolError with a one-line message. The
    main process holds the run folder's lock throughout: a second process is refused.
    """
    main = distributed.is_main()  # under torchrun, rank 0 alone reads and writes run_dir
    folder = RunFolder(run_dir, writes=main)
    try:
        with folder.lock() if main else contextlib.nullcontext():
            return _train(cfg, folder)
    except RuntimeError as e:  # CUDA's OutOfMemoryError is one; the CPU allocator's is plain
        if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise
        raise GantoolError(f"out of memory: {first_line(e)}; {_SMALLER}") from e
    except MemoryError as e:
        raise GantoolError(f"out of memory; {_SMALLER}") from e
    except OSError as e:
        why = "the disk is full" if e.errno == errno.ENOSPC else e.strerror or e
        raise GantoolError(f"cannot write {e.filename or run_dir}: {why}") from e


_SMALLER = "try a smaller trainer.batch_size, model.*.hidden or trainer.num_samples"


def _train(cfg: Config, folder: RunFolder) -> dict:
    from gantool.finish import finish  # the end-of-run pictures, evaluation and summary

    entered = time.perf_counter()
    t = cfg.trainer
    run = Run(cfg, folder)
    run.resume()
    log.info(
        "Training %s for %d steps on %s; run folder %s",
        cfg.dataset.name,
        run.total_steps,
        run.device,
        folder.path,
    )
    started = time.perf_counter()
    outputs = losses.OUTPUT_LABELS[cfg.loss.name]
    bar = ProgressBar(run.total_steps, run.step, visible=run.main, outputs=outputs)
    with bar, StopRequest() as stop:
        while run.step < run.total_steps:
            run.train_step()
            last = run.step == run.total_steps  # the last step always logs, samples, saves
            bar.update(run.step, run.log_row() if run.due(t.log_every) or last else None)
            if run.due(t.sample_every) or last:
                run.draw_samples()
            stopping = distributed.any_signal(stop.signum)  # all processes stop at one step
            if run.due(t.checkpoint_every) or last or stopping is not None:
                saved = run.save_checkpoint()
            if stopping is not None:
                raise Interrupted(
                    f"{signal.Signals(stopping).name} at step {run.step}: saved {saved}; "
                    f"continue with `gantool resume {folder.path}`",
                    stopping,
                )
    return finish(run, train_seconds=time.perf_counter() - started, entered=entered)


class Run:
    """A run between its steps: the GAN, the data, the fixed noise, the statistics since the
    last log row, and what it writes at each interval. Checkpoints hold all of it."""

    def __init__(self, cfg: Config, folder: RunFolder):
        t = cfg.trainer
        self.cfg, self.folder = cfg, folder
        self.device = device = training_device(cfg)
        self.main = distributed.is_main()  # under torchrun, rank 0 alone reads and writes
        self.family = family(cfg.dataset)
        seed_everything(t.seed)
        with distributed.main_first():  # rank 0 downloads data, if it must, before the others
            stream = training_stream(cfg, device)
        self.data = distributed.shard(stream)
        self.total_steps = run_length(t, self.data.batches_per_epoch)
        self.gan = GAN.build(cfg.model, cfg.optimizer, t.ema_decay, self.data.data_dim, device)
        if device.type == "cpu":
            threads = cpu_threads(cfg.device.num_threads, self.gan)
            torch.set_num_threads(threads)
            log.info("CPU threads: %d (device.num_threads=%d)", threads, cfg.device.num_threads)
        distributed.seed_rank(t.seed)  # under torchrun, each process draws noise of its own
        self.settings = StepSettings.of(cfg, distributed.world_size())
        # The whole step as one CUDA graph where trainer.cuda_graph asks for it and the setup
        # allows it; None: today's eager step (always on CPU).
        self.graph = graph.plan(cfg, self.gan, self.data, self.settings, device)
        # The same noise for every sample picture, so they can be compared across steps.
        fixed = torch.Generator(device).manual_seed(t.seed)
        # A conditional model's pictures show its classes in blocks: one per row of a grid.
        classes = row_classes(t.num_samples, cfg.model.num_classes, device)
        self.fixed_noise = sample_latent(t.num_samples, cfg.model, device, fixed, classes)
        self.step = 0
        # Statistics summed since the last log row; checkpoints carry them so rows resume.
        self.stats_sum, self.count = torch.zeros(len(STAT_KEYS), device=device), 0
        # The first step whose losses were not finite (-1: none), tracked on the device.
        self.nonfinite_step = torch.tensor(-1, device=device)
        self.started_in = os.getcwd()  # what a relative dataset.root is relative to
        self.checkpoints = Checkpointer(folder, t.keep_checkpoints, writes=self.main)

    def due(self, every: int) -> bool:
        return self.step % every == 0

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "gan": self.gan.state_dict(),
            "data": self.data.state_dict(),
            "rng": rng_state(),
            "fixed_noise": self.fixed_noise.cpu(),
            "stats": {"sum": self.stats_sum.cpu(), "count": self.count},
            "config": to_dict(self.cfg),
            "started_in": self.started_in,
        }

    def load_state_dict(self, state: dict) -> None:
        self.gan.load_state_dict(state["gan"])
        self.data.load_state_dict(state["data"])
        distributed.restore_rng(state, self.cfg.trainer.seed)
        self.fixed_noise = state["fixed_noise"].to(self.device)
        self.stats_sum = state["stats"]["sum"].to(self.device)
        self.count = state["stats"]["count"]
        self.step = state["step"]
        self.started_in = state.get("started_in", self.started_in)

    def resume(self) -> None:
        """Continue from the newest checkpoint, if there is one, after the checks that can
        refuse it; only then is anything in the run folder written."""
        t = self.cfg.trainer
        # Rank 0 reads and checks (the same model?); the others get a copy.
        newest = distributed.from_main(lambda: self.checkpoints.newest(self.cfg))
        if newest is not None:
            check_not_done(self.folder.path, newest[1]["step"], self.total_steps, t)
        if self.main:
            self.checkpoints.set_aside_broken()
        if newest is not None:
            path, state = newest
            self.load_state_dict(state)
            log.info("Resumed from %s at step %d", path, self.step)
        # Rows after the checkpoint are logged again; so is the row of a partial interval.
        logged = self.step if self.due(t.log_every) else self.step - 1
        self.folder.start_logs(logged, tensorboard=self.cfg.logger.name == "tensorboard")

    def save_checkpoint(self) -> Path | None:
        self.check_finite()
        self.folder.flush_logs()
        if self.gan.ema is not None:  # the saved EMA generator is ready to sample from
            self.gan.calibrate_ema(self.cfg.model, self.device)
        state = self.state_dict()
        if distributed.world_size() > 1:
            distributed.check_replicas(state["gan"], self.step)  # rank 0's file speaks for all
            state["rng_by_rank"] = distributed.gather(state["rng"])
        return self.checkpoints.save(self.step, state)

    # --- the step and what it leaves -------------------------------------------------------------
    def train_step(self) -> None:
        if self.graph is not None:  # one process: nothing to average
            stats = self.graph.step()  # the EMA update included; overwritten by the next step
        else:
            # Averaged over the processes: every rank logs the global batch's statistics.
            r1 = self.settings.r1_due(self.step)
            stats = train_step(self.gan, self.data, self.settings, self.device, r1=r1)
            stats = distributed.mean(stats)
            if self.gan.ema is not None:
                self.gan.update_ema(self.cfg.trainer.ema_decay)
        self.step += 1
        self.stats_sum += stats
        self.count += 1
        bad = (self.nonfinite_step < 0) & ~torch.isfinite(stats[:2]).all()
        self.nonfinite_step = torch.where(bad, self.step, self.nonfinite_step)

    def check_finite(self) -> None:
        """A host sync: only at log rows and checkpoints."""
        bad = int(self.nonfinite_step)
        if bad >= 0:
            kept = self.checkpoints.latest()
            raise GantoolError(
                f"training diverged: a loss was not finite at step {bad}; stopped at step "
                f"{self.step}, kept {kept.name if kept else 'no checkpoint'} as the last good one"
            )

    def log_row(self) -> dict:
        """The statistics averaged since the last row, appended to metrics.jsonl."""
        self.check_finite()
        values = (self.stats_sum / self.count).tolist()  # the one host sync per log interval
        row = {"step": self.step, **dict(zip(STAT_KEYS, values, strict=True))}
        self.folder.log_row(self.step, row)
        if self.due(self.cfg.trainer.log_every):  # a last, partial interval stays in checkpoints
            self.stats_sum.zero_()
            self.count = 0
        return row

    def draw_samples(self) -> None:
        """The fixed noise's samples as a picture in samples/ (and TensorBoard)."""
        if not self.main:
            return
        if self.gan.ema is not None:
            self.gan.calibrate_ema(self.cfg.model, self.device)
        samples = generate(self.gan.sampler, self.fixed_noise).cpu()  # (num_samples, data_dim)
        picture = self.family.picture(samples, self.cfg.dataset, ".png", f"step {self.step}")
        self.folder.log_picture(self.step, picture)


TORCH_THREADS = torch.get_num_threads()  # torch's own choice (OMP_NUM_THREADS, or the cores)


def cpu_threads(requested: int, gan: GAN) -> int:
    """device.num_threads, or for 0 (auto): one thread for a small model; for a larger one,
    torch's own choice less the cores other processes keep busy (the 1-minute load average).

    Measured on a shared 2-core machine (MNIST default, 60 steps): 2 threads took 3-24 times
    as long as 1 whenever other work was running, because threads that wait on a busy core
    wait on each other too. On an idle machine more threads help, at most by the core count.
    """
    if requested > 0:
        return requested
    if gan.num_parameters() < SMALL_MODEL:
        return 1
    try:
        busy = round(os.getloadavg()[0])
    except OSError:  # not on this platform
        busy = 0
    return max(1, min(TORCH_THREADS, (os.cpu_count() or 1) - busy))


def training_device(cfg: Config) -> torch.device:
    """The device the run trains on: device.name resolved, and under device=auto in one
    process, the CPU for a small model whose step would not be captured (device.auto_device).
    Under torchrun the process group has chosen its backend for the resolved device already."""
    device = resolve_device(cfg.device.name)
    if cfg.device.name != "auto" or device.type == "cpu" or distributed.world_size() > 1:
        return device
    from gantool.models import Discriminator, Generator

    dim = family(cfg.dataset).data_dim(cfg.dataset)
    nets = (Generator(cfg.model, dim), Discriminator(cfg.model, dim))  # on the CPU: small
    size = sum(p.numel() for net in nets for p in net.parameters())
    return auto_device(device, size, graph.captures(cfg, device))
