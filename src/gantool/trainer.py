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
from gantool.data import family
from gantool.device import resolve_device
from gantool.errors import GantoolError, Interrupted, first_line
from gantool.gan import GAN
from gantool.models import generate, sample_latent
from gantool.preflight import check_not_done
from gantool.rng import rng_state, seed_everything
from gantool.run_folder import RunFolder
from gantool.signals import StopRequest

log = logging.getLogger(__name__)

# What train_step returns, in order; each row of metrics.jsonl averages them over log_every steps.
STAT_KEYS = (
    "train/d_loss",
    "train/g_loss",
    "train/d_real",  # D(x): D's mean probability that a real sample is real
    "train/d_fake",  # D(G(z)): the same for generated samples
    "train/fake_mean",
    "train/fake_std",
)


@dataclass(frozen=True)
class StepSettings:
    """What one training step reads, and nothing more."""

    batch_size: int  # this process's share of trainer.batch_size (all of it in one process)
    d_steps: int
    g_steps: int
    reuse_fake: bool
    r1_gamma: float
    g_loss: str
    bf16: bool
    model: ModelConfig  # how G's noise is drawn

    @classmethod
    def of(cls, cfg: Config, num_processes: int = 1) -> StepSettings:
        t = cfg.trainer
        return cls(
            batch_size=t.batch_size // num_processes,
            d_steps=t.d_steps,
            g_steps=t.g_steps,
            reuse_fake=t.reuse_fake,
            r1_gamma=cfg.loss.r1_gamma,
            g_loss=cfg.loss.g_loss,
            bf16=cfg.device.precision == "bf16",
            model=cfg.model,
        )


def train_step(
    gan: GAN, data, s: StepSettings, device: torch.device, graph_safe: bool = False
) -> torch.Tensor:
    """One step: d_steps D updates, then g_steps G updates. Returns STAT_KEYS as a (6,) tensor.

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

    # --- D: real labelled 1, fake labelled 0 ---
    for i in range(s.d_steps):
        real = data.next_batch()  # (B, data_dim)
        real.requires_grad_(s.r1_gamma > 0)  # R1 needs D's gradient with respect to x
        z = sample_latent(s.batch_size, s.model, device)  # (B, latent_dim)
        # G's graph is kept only when the G update below will reuse these fakes.
        keep_graph = s.reuse_fake and i == s.d_steps - 1
        with autocast, torch.set_grad_enabled(keep_graph):
            fake = G(z)  # (B, data_dim)
        with autocast:
            # detach: D's loss must not reach G's weights
            real_logits, fake_logits = D(real), D(fake.detach())  # (B, 1), or (1, 1) on moments
        d_loss = losses.d_loss(real_logits, fake_logits)
        if s.r1_gamma > 0:
            d_loss = d_loss + s.r1_gamma / 2 * losses.r1_penalty(real_logits, real)
        gan.d_optimizer.zero_grad(set_to_none=not graph_safe)
        d_loss.backward()
        gan.d_optimizer.step()

    # --- G: fake labelled real (non_saturating), or the minimax loss ---
    D.requires_grad_(False)  # gradients flow through D to G, but D's own are not needed
    for i in range(s.g_steps):
        if not (s.reuse_fake and i == 0):  # fresh noise, as the reference GANs do
            z = sample_latent(s.batch_size, s.model, device)
            with autocast:
                fake = G(z)
        with autocast:
            fake_logits_for_g = D(fake)  # no detach: G learns through D's judgement
        g_loss = losses.g_loss(fake_logits_for_g, s.g_loss)
        gan.g_optimizer.zero_grad(set_to_none=not graph_safe)
        g_loss.backward()
        gan.g_optimizer.step()
    D.requires_grad_(True)

    with torch.no_grad():
        return torch.stack(
            [
                d_loss,
                g_loss,
                torch.sigmoid(real_logits).float().mean(),
                torch.sigmoid(fake_logits).float().mean(),
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
    with ProgressBar(run.total_steps, run.step, visible=run.main) as bar, StopRequest() as stop:
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
        self.device = device = resolve_device(cfg.device.name)
        self.main = distributed.is_main()  # under torchrun, rank 0 alone reads and writes
        self.family = family(cfg.dataset)
        seed_everything(t.seed)
        with distributed.main_first():  # rank 0 downloads data, if it must, before the others
            stream = self.family.stream(cfg.dataset, t.batch_size, t.seed, device)
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
        self.fixed_noise = sample_latent(t.num_samples, cfg.model, device, fixed)
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
            stats = distributed.mean(train_step(self.gan, self.data, self.settings, self.device))
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


# Below this many parameters in G and D, one CPU thread beats several: each op is too small to
# share out, and threads waiting on each other cost more (much more on a busy machine).
SMALL_MODEL = 100_000
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
