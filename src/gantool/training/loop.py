"""The training loop, and the Run it drives. The step is step.py's, the files the run folder's
and the checkpointer's, the end of a run finish.py's."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from gantool.config.compose import to_dict
from gantool.config.schema import Config, TrainerConfig, run_length
from gantool.core.console import ProgressBar
from gantool.core.errors import ConfigError, GantoolError, Interrupted, NothingToDo, first_line
from gantool.core.files import why_not_written
from gantool.core.signals import StopRequest
from gantool.datasets.registry import family, training_stream
from gantool.nn.mlp import (
    generate,
    row_classes,
    sample_latent,
    split_classes,
)
from gantool.runtime import distributed
from gantool.runtime.device import auto_device, free_memory, resolve_device
from gantool.runtime.rng import rng_state, seed_everything
from gantool.runtime.threads import cpu_threads
from gantool.training import graph
from gantool.training.checkpointer import Checkpointer
from gantool.training.codec import Checkpoint
from gantool.training.finish import finish
from gantool.training.gan import GAN, augmenter, shapes_of
from gantool.training.run_folder import Logger, RunFolder
from gantool.training.step import STAT_KEYS, GANStep, StepSettings
from gantool.training.watch import Watch

log = logging.getLogger(__name__)

# What a run logs to besides metrics.jsonl: made once the run knows its folder and the step
# it starts from (TensorBoard drops its records after that step).
OpenLoggers = Callable[[Path, int], Sequence[Logger]]


def train(cfg: Config, run_dir: Path, open_loggers: OpenLoggers) -> dict:
    """Train (or resume, if run_dir holds checkpoints) and return the run's summary.

    Every failure a user can act on comes out as a GantoolError with a one-line message. The
    main process holds the run folder's lock throughout: a second process is refused.
    """
    main = distributed.is_main()  # under torchrun, rank 0 alone reads and writes run_dir
    folder = RunFolder(run_dir, writes=main)
    try:
        with folder.lock() if main else contextlib.nullcontext():
            return _train(cfg, folder, open_loggers)
    except RuntimeError as e:  # CUDA's OutOfMemoryError is one; the CPU allocator's is plain
        if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise
        raise GantoolError(f"out of memory: {first_line(e)}; {_SMALLER}") from e
    except MemoryError as e:
        raise GantoolError(f"out of memory; {_SMALLER}") from e
    except OSError as e:
        raise GantoolError(f"cannot write {e.filename or run_dir}: {why_not_written(e)}") from e


_SMALLER = "try a smaller trainer.batch_size, model.*.hidden or trainer.num_samples"


def _train(cfg: Config, folder: RunFolder, open_loggers: OpenLoggers) -> dict:
    entered = time.perf_counter()
    t = cfg.trainer
    run = Run(cfg, folder)
    run.resume(open_loggers)
    log.info(
        "Training on %s for %d steps on %s; run folder %s",
        run.family.describe(cfg.dataset),
        run.total_steps,
        run.device,
        folder.path,
    )
    started = time.perf_counter()
    bar = ProgressBar(run.total_steps, run.step, visible=run.main, outputs=run.settings.loss.labels)
    with bar, StopRequest() as stop:
        while run.step < run.total_steps and not run.watch.stopped:
            run.train_step()
            last = run.step == run.total_steps  # the last step always logs, samples, saves
            # A log row may evaluate, roll back or stop early (watch.py).
            bar.update(run.step, run.log_row() if run.due(t.log_every) or last else None)
            last = last or run.watch.stopped is not None
            if run.due(t.sample_every) or last:
                run.draw_samples()
            stopping = distributed.any_signal(stop.signum)  # all processes stop at one step
            best = run.watch.best_step == run.step  # a new best is saved at once, as best.pt
            if run.due(t.checkpoint_every) or last or stopping is not None or best:
                saved = run.save_checkpoint()
            if stopping is not None:
                raise Interrupted(
                    f"{signal.Signals(stopping).name} at step {run.step}: saved {saved}; "
                    f"continue with `gantool resume {folder.path}`",
                    stopping,
                )
    return finish(run, train_seconds=time.perf_counter() - started, entered=entered)


def check_not_done(
    run_dir: Path, step: int, total_steps: int, t: TrainerConfig, watch: dict | None = None
) -> None:
    """A run already at or past its length (`t`: its TrainerConfig), or stopped early
    (`watch`: its checkpoint's Watch state) with trainer.patience not raised since, has nothing
    left to do: NothingToDo (exit 0)."""
    if step >= total_steps:
        length = f"trainer.steps={t.steps}" if t.steps is not None else f"trainer.epochs={t.epochs}"
        raise NothingToDo(f"{run_dir} is already at step {step} ({length}): nothing to do")
    watch = watch or {}
    if watch.get("stopped") and t.patience and watch.get("evals_since_best", 0) >= t.patience:
        raise NothingToDo(
            f"{run_dir} stopped early at step {step} ({watch['stopped']}): nothing to do; "
            "raise trainer.patience (or set it to 0) to go on"
        )


def check_fits(cfg: Config) -> None:
    """Refuse, before anything starts, a run that cannot fit in this machine's free memory:
    the networks with their gradients, Adam's moments and the EMA copy, the fixed noise, a
    fixed training set drawn from the config, and a step's activations, in float32. An
    estimate that errs low: what it refuses could never have run."""
    device = resolve_device(cfg.device.name)
    free = free_memory(device)
    if free is None:
        return
    t, m = cfg.trainer, cfg.model
    dim = family(cfg.dataset).data_dim(cfg.dataset)
    params = [sum(p.numel() for p in net.parameters()) for net in shapes_of(cfg)]
    copies = 4 + (t.ema_decay > 0)  # weights, gradients, Adam's two moments, EMA
    rows = t.batch_size * m.d.pack
    widths = sum(m.g.hidden) + sum(m.d.hidden) * max(m.g.pieces, m.d.pieces) + dim
    drawn = getattr(cfg.dataset, "num_samples", None) or 0  # a mixture's fixed set
    numbers = (
        params[0] * copies
        + params[1] * 4
        + t.num_samples * (m.latent_dim + 1 + dim)
        + drawn * dim
        + rows * widths
    )
    if 4 * numbers > free:
        raise ConfigError(
            f"this run needs at least {_gb(4 * numbers)} of memory on {device.type} "
            f"({sum(params):,} parameters in G and D, batches of {rows:,}), and "
            f"{_gb(free)} is free; {_SMALLER}"
        )


def _gb(size: int) -> str:
    return f"{size / 2**30:,.1f} GB"


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
        self.data = distributed.shard(training_stream(cfg, device))
        self.total_steps = run_length(t, self.data.batches_per_epoch)
        shape = self.family.sample_shape(cfg.dataset)
        self.gan = GAN.build(
            cfg.model, cfg.optimizer, t.ema_decay, shape, device, augmenter(t, shape)
        )
        if device.type == "cpu":
            threads = cpu_threads(cfg.device.num_threads, self.gan.num_parameters())
            torch.set_num_threads(threads)
            log.info("CPU threads: %d (device.num_threads=%d)", threads, cfg.device.num_threads)
        distributed.seed_rank(t.seed)  # under torchrun, each process draws noise of its own
        self.settings = StepSettings.of(cfg, distributed.world_size())
        # The whole step as one CUDA graph where trainer.cuda_graph asks for it and the setup
        # allows it; else the eager step (always on CPU).
        self.graph = graph.plan(cfg, self.gan, self.data, self.settings, device)
        self.eager_step = GANStep(self.gan, self.settings, device)
        # The same noise for every sample picture, so they can be compared across steps.
        fixed = torch.Generator(device).manual_seed(t.seed)
        # A conditional model's pictures show its classes in blocks: one per row of a grid.
        m = cfg.model
        classes = row_classes(t.num_samples, m.num_classes, device) if m.conditional else None
        self.fixed_noise = sample_latent(t.num_samples, cfg.model, device, fixed, classes)
        self.step = 0
        # Statistics summed since the last log row; checkpoints carry them so rows resume.
        self.stats_sum, self.count = torch.zeros(len(STAT_KEYS), device=device), 0
        # The first step whose losses were not finite (-1: none), tracked on the device.
        self.nonfinite_step = torch.tensor(-1, device=device)
        self.started_in = os.getcwd()  # what a relative dataset.root is relative to
        self.checkpoints = Checkpointer(folder, t.keep_checkpoints, writes=self.main)
        # Periodic evaluation, the best checkpoint, early stop and rollback.
        self.watch = Watch(cfg, self.family.targets(cfg.dataset))

    def due(self, every: int) -> bool:
        return self.step % every == 0

    # --- checkpoints --------------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            step=self.step,
            gan=self.gan.state_dict(),
            stream=self.data.state_dict(),
            epoch_size=self.data.epoch_size,
            rng=distributed.gather(rng_state()),  # every rank's, rank 0 first
            fixed_noise=self.fixed_noise.cpu(),
            stats_sum=self.stats_sum.cpu(),
            stats_count=self.count,
            config=to_dict(self.cfg),
            started_in=self.started_in,
            watch=self.watch.state_dict(),
        )

    def restore(self, ckpt: Checkpoint) -> None:
        self.gan.load_state_dict(ckpt.gan)
        self.data.load_state_dict(ckpt.stream)
        distributed.restore_rng(ckpt.rng, self.cfg.trainer.seed, ckpt.step)
        self.fixed_noise = ckpt.fixed_noise.to(self.device)
        self.stats_sum = ckpt.stats_sum.to(self.device)
        self.count = ckpt.stats_count
        self.step = ckpt.step
        self.started_in = ckpt.started_in or self.started_in
        self.watch.load_state_dict(ckpt.watch)
        self.watch.stopped = None  # check_not_done let it go on: patience was raised

    def resume(self, open_loggers: OpenLoggers) -> None:
        """Continue from the newest checkpoint, if there is one, after the checks that can
        refuse it; only then is anything in the run folder written."""
        t = self.cfg.trainer
        # Rank 0 reads and checks (the same model?); the others get a copy.
        newest = distributed.from_main(lambda: self.checkpoints.newest(self.cfg))
        if newest is not None:
            check_not_done(self.folder.path, newest[1].step, self.total_steps, t, newest[1].watch)
        if self.main:
            self.checkpoints.set_aside_broken()
        if newest is not None:
            path, ckpt = newest
            self.restore(ckpt)
            log.info("Resumed from %s at step %d", path, self.step)
            if self.watch.best_step == self.step:  # killed between the two links of its save
                self.checkpoints.link_best(path)
        # Rows after the checkpoint are logged again; so is the row of a partial interval.
        logged = self.step if self.due(t.log_every) else self.step - 1
        loggers = open_loggers(self.folder.path, logged) if self.main else ()
        self.folder.start_logs(logged, loggers)

    def save_checkpoint(self) -> Path | None:
        self.watch.check_finite(self)  # rolls back, or raises, where a loss was not finite
        self.folder.flush_logs()
        if self.gan.ema is not None:  # the saved EMA generator is ready to sample from
            self.gan.calibrate_ema(self.cfg.model, self.device)
        ckpt = self.checkpoint()
        distributed.check_replicas(ckpt.gan, self.step)  # rank 0's file speaks for all
        return self.checkpoints.save(ckpt, best=self.watch.best_step == self.step)

    # --- the step and what it leaves -------------------------------------------------------------
    def train_step(self) -> None:
        if self.graph is not None:  # one process: nothing to average
            stats = self.graph.step()  # the EMA update included; overwritten by the next step
        else:
            # Averaged over the processes: every rank logs the global batch's statistics.
            stats = self.eager_step(self.data, r1=self.settings.r1_due(self.step))
            stats = distributed.mean(stats)
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
        """The statistics averaged since the last row, appended to metrics.jsonl, with the
        periodic evaluation's numbers when due."""
        values = (self.stats_sum / self.count).tolist()  # the one host sync per log interval
        row = {"step": self.step, **dict(zip(STAT_KEYS, values, strict=True))}
        self.watch.review(self, row)  # may roll back, or raise where a loss was not finite
        self.folder.log_row(self.step, row)
        if self.due(self.cfg.trainer.log_every):  # a last, partial interval stays in checkpoints
            self.stats_sum.zero_()
            self.count = 0
        return row

    def draw_samples(self) -> None:
        """The fixed noise's samples as a picture in samples/ (and the loggers')."""
        if not self.main:
            return
        if self.gan.ema is not None:
            self.gan.calibrate_ema(self.cfg.model, self.device)
        samples = generate(self.gan.sampler, self.fixed_noise).cpu()  # (num_samples, data_dim)
        classes = split_classes(self.fixed_noise)[1] if self.cfg.model.conditional else None
        title = f"step {self.step}"
        picture = self.family.picture(samples, self.cfg.dataset, ".png", title, classes)
        self.folder.log_picture(self.step, picture)


def training_device(cfg: Config) -> torch.device:
    """The device the run trains on: device.name resolved, and under device=auto in one
    process, the CPU for a small model whose step would not be captured (device.auto_device).
    Under torchrun the process group has chosen its backend for the resolved device already."""
    device = resolve_device(cfg.device.name)
    if cfg.device.name != "auto" or device.type == "cpu" or distributed.world_size() > 1:
        return device
    size = sum(p.numel() for net in shapes_of(cfg) for p in net.parameters())
    return auto_device(device, size, graph.captures(cfg, device))
