"""The training step and loop. File formats live in checkpoint.py, outputs.py and plots.py."""

from __future__ import annotations

import copy
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gantool import distributed, losses
from gantool.checkpoint import (
    latest_checkpoint,
    load_latest,
    remove_temporaries,
    save_checkpoint,
)
from gantool.config import Config, GaussianConfig, MnistConfig, check_intervals, to_dict
from gantool.console import ProgressBar
from gantool.data import build_data
from gantool.device import resolve_device
from gantool.errors import GantoolError, Interrupted, first_line
from gantool.evaluate import evaluate
from gantool.models import Discriminator, Generator, generate, sample_latent
from gantool.optim import build_optimizer
from gantool.outputs import MetricsLog, TensorBoardLog, write_json
from gantool.plots import moments_over_training, progress_gif, training_curves
from gantool.rng import rng_state, seed_everything
from gantool.sampling import save_samples
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


# 10,000 noise samples set the EMA generator's BatchNorm statistics (see GAN.calibrate_ema).
CALIBRATION_BATCHES, CALIBRATION_BATCH_SIZE = 20, 500


@dataclass
class GAN:
    # Under torchrun G and D are DistributedDataParallel wrappers; checkpoints hold the modules.
    generator: Generator
    discriminator: Discriminator
    g_optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer
    ema: Generator | None = None  # a moving average of G's weights, when trainer.ema_decay > 0

    @classmethod
    def build(cls, cfg: Config, data_dim: int, device: torch.device) -> GAN:
        g = Generator(cfg.model, data_dim).to(device)
        d = Discriminator(cfg.model.d, data_dim).to(device)
        ema = copy.deepcopy(g).requires_grad_(False) if cfg.trainer.ema_decay > 0 else None
        return cls(
            distributed.wrap(g),
            distributed.wrap(d),
            build_optimizer(g.parameters(), cfg.optimizer.g),
            build_optimizer(d.parameters(), cfg.optimizer.d),
            ema,
        )

    @property
    def sampler(self) -> Generator:
        """The generator to draw samples from: the moving average when there is one."""
        return self.ema if self.ema is not None else distributed.unwrap(self.generator)

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """ema <- decay * ema + (1 - decay) * G, for the weights. BatchNorm statistics are
        measured afresh by calibrate_ema before the EMA generator is used."""
        ema, live = list(self.ema.parameters()), list(self.generator.parameters())
        torch._foreach_lerp_(ema, live, 1 - decay)  # one call for all the weights

    @torch.no_grad()
    def calibrate_ema(self, cfg: Config, device: torch.device) -> None:
        """Give the EMA generator's BatchNorm layers running statistics of its own activations.

        G's statistics do not fit the averaged weights: copied over, they doubled the FLD of
        the MNIST default with EMA 0.999 (530 against 260 recalibrated). Fixed noise of its
        own, so calibrating moves no RNG and gives the same result every time.
        """
        norms = [m for m in self.ema.modules() if isinstance(m, nn.BatchNorm1d)]
        if not norms:
            return
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the calibration batches
        noise = torch.Generator(device).manual_seed(0)
        for _ in range(CALIBRATION_BATCHES):  # the EMA stays in train mode; it is never trained
            self.ema(sample_latent(CALIBRATION_BATCH_SIZE, cfg.model, device, noise))

    def state_dict(self) -> dict:
        return {
            name: distributed.unwrap(part).state_dict()
            for name in self.__dataclass_fields__
            if (part := getattr(self, name)) is not None
        }

    def load_state_dict(self, state: dict) -> None:
        for name in self.__dataclass_fields__:
            part = distributed.unwrap(getattr(self, name))
            if part is None:
                continue
            if name == "ema" and "ema" not in state:  # EMA turned on when resuming
                log.info("Starting the EMA generator from the checkpoint's generator")
                part.load_state_dict(state["generator"])
                continue
            part.load_state_dict(state[name])


def train_step(gan: GAN, data, cfg: Config, device: torch.device) -> torch.Tensor:
    """One step: d_steps D updates, then g_steps G updates. Returns STAT_KEYS as a (6,) tensor.

    Nothing here reads a value back to the host, so the device never waits on Python.
    """
    G, D = gan.generator, gan.discriminator
    t, r1_gamma = cfg.trainer, cfg.loss.r1_gamma
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=cfg.device.precision == "bf16")

    # --- D: real labelled 1, fake labelled 0 ---
    for i in range(t.d_steps):
        real = data.next_batch()  # (B, data_dim)
        real.requires_grad_(r1_gamma > 0)  # R1 needs D's gradient with respect to x
        z = sample_latent(t.batch_size, cfg.model, device)  # (B, latent_dim)
        # G's graph is kept only when the G update below will reuse these fakes.
        keep_graph = t.reuse_fake and i == t.d_steps - 1
        with autocast, torch.set_grad_enabled(keep_graph):
            fake = G(z)  # (B, data_dim)
        with autocast:
            # detach: D's loss must not reach G's weights
            real_logits, fake_logits = D(real), D(fake.detach())  # (B, 1), or (1, 1) on moments
        d_loss = losses.d_loss(real_logits, fake_logits)
        if r1_gamma > 0:
            d_loss = d_loss + r1_gamma / 2 * losses.r1_penalty(real_logits, real)
        gan.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        gan.d_optimizer.step()

    # --- G: fake labelled real (non_saturating), or the minimax loss ---
    D.requires_grad_(False)  # gradients flow through D to G, but D's own are not needed
    for i in range(t.g_steps):
        if not (t.reuse_fake and i == 0):  # fresh noise, as the reference GANs do
            z = sample_latent(t.batch_size, cfg.model, device)
            with autocast:
                fake = G(z)
        with autocast:
            fake_logits_for_g = D(fake)  # no detach: G learns through D's judgement
        g_loss = losses.g_loss(fake_logits_for_g, cfg.loss.g_loss)
        gan.g_optimizer.zero_grad(set_to_none=True)
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

    Every failure a user can act on comes out as a GantoolError with a one-line message.
    """
    try:
        return _train(cfg, run_dir)
    except RuntimeError as e:  # CUDA's OutOfMemoryError is one; the CPU allocator's is plain
        if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise
        raise GantoolError(f"out of memory: {first_line(e)}; {_SMALLER}") from e
    except MemoryError as e:
        raise GantoolError(f"out of memory; {_SMALLER}") from e
    except OSError as e:
        raise GantoolError(f"cannot write {e.filename or run_dir}: {e.strerror or e}") from e


_SMALLER = "try a smaller trainer.batch_size, model.*.hidden or trainer.num_samples"


def _train(cfg: Config, run_dir: Path) -> dict:
    entered = time.perf_counter()
    t = cfg.trainer
    device = resolve_device(cfg.device.name)
    main = distributed.is_main()  # under torchrun, rank 0 alone reads and writes run_dir
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(t.seed)
    with distributed.main_first():  # rank 0 downloads MNIST, if it must, before the others look
        data = distributed.shard(build_data(cfg.dataset, t.batch_size, t.seed, device))
    if t.steps is not None:
        total_steps = t.steps
    else:  # each step uses d_steps batches
        total_steps = max(1, t.epochs * data.batches_per_epoch // t.d_steps)
        check_intervals(t, total_steps)
    gan = GAN.build(cfg, data.data_dim, device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg.device.num_threads, gan))
    distributed.seed_rank(t.seed)  # under torchrun, each process draws noise of its own
    step_cfg = distributed.local_config(cfg)  # its trainer.batch_size: this process' share
    # The same noise for every sample grid, so grids can be compared across steps.
    fixed_generator = torch.Generator(device).manual_seed(t.seed)
    fixed_noise = sample_latent(t.num_samples, cfg.model, device, fixed_generator)

    # Statistics summed since the last log row; checkpoints carry them so rows resume exactly.
    stats_sum, count = torch.zeros(len(STAT_KEYS), device=device), 0
    step = 0
    if main:
        remove_temporaries(run_dir)
    # On CPU: load_state_dict copies onto the device. Rank 0 reads; the others get a copy.
    latest = distributed.from_main(lambda: load_latest(run_dir))
    if latest is not None:
        path, state = latest
        _check_same_model(state["config"], cfg, path)
        gan.load_state_dict(state["gan"])
        data.load_state_dict(state["data"])
        distributed.restore_rng(state, t.seed)
        fixed_noise = state["fixed_noise"].to(device)
        stats_sum, count = state["stats"]["sum"].to(device), state["stats"]["count"]
        step = state["step"]
        log.info("Resumed from %s at step %d", path, step)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    if main:  # rows after the checkpoint are logged again; so is a row for a partial interval
        metrics.truncate_after(step if step % t.log_every == 0 else step - 1)
    tensorboard = cfg.logger.name == "tensorboard" and main
    board = TensorBoardLog(run_dir / "tensorboard", step) if tensorboard else None
    # The first step whose losses were not finite (-1: none), tracked on the device.
    nonfinite_step = torch.tensor(-1, device=device)

    def check_finite() -> None:  # a host sync: only at log rows and checkpoints
        bad = int(nonfinite_step)
        if bad >= 0:
            kept = latest_checkpoint(run_dir)
            raise GantoolError(
                f"training diverged: a loss was not finite at step {bad}; stopped at step "
                f"{step}, kept {kept.name if kept else 'no checkpoint'} as the last good one"
            )

    def checkpoint() -> Path | None:
        check_finite()
        if board:
            board.flush()
        if gan.ema is not None:  # the saved EMA generator is ready to sample from
            gan.calibrate_ema(cfg, device)
        state = {
            "step": step,
            "gan": gan.state_dict(),
            "data": data.state_dict(),
            "rng": rng_state(),
            "fixed_noise": fixed_noise.cpu(),
            "stats": {"sum": stats_sum.cpu(), "count": count},
            "config": to_dict(cfg),
        }
        if distributed.world_size() > 1:
            distributed.check_replicas(state["gan"], step)  # rank 0's file speaks for them all
            state["rng_by_rank"] = distributed.gather(state["rng"])
        return save_checkpoint(state, run_dir, step, t.keep_checkpoints) if main else None

    def sample_file() -> None:
        path = run_dir / "samples" / f"step_{step:07d}.png"
        if gan.ema is not None:
            gan.calibrate_ema(cfg, device)
        samples = generate(gan.sampler, fixed_noise)  # (num_samples, data_dim)
        save_samples(samples, cfg.dataset, path, f"step {step}")
        if board:
            board.samples(step, samples.cpu(), images=isinstance(cfg.dataset, MnistConfig))

    log.info(
        "Training %s for %d steps on %s; run folder %s",
        cfg.dataset.name,
        total_steps,
        device,
        run_dir,
    )
    first_step_time, started = time.time(), time.perf_counter()
    with ProgressBar(total_steps, step, visible=main) as bar, StopRequest() as stop:
        while step < total_steps:
            # Averaged over the processes: every rank logs the global batch's statistics.
            stats = distributed.mean(train_step(gan, data, step_cfg, device))
            if gan.ema is not None:
                gan.update_ema(t.ema_decay)
            step += 1
            stats_sum += stats
            count += 1
            bad = (nonfinite_step < 0) & ~torch.isfinite(stats[:2]).all()
            nonfinite_step = torch.where(bad, step, nonfinite_step)
            if step % t.log_every == 0 or step == total_steps:
                check_finite()
                values = (stats_sum / count).tolist()  # the one host sync per log interval
                row = {"step": step, **dict(zip(STAT_KEYS, values, strict=True))}
                if main:
                    metrics.append(row)
                if board:
                    board.scalars(step, row)
                if step % t.log_every == 0:  # a last, partial interval stays in the checkpoint
                    stats_sum.zero_()
                    count = 0
                bar.update(step, row)
            else:
                bar.update(step)
            if step % t.sample_every == 0 and main:
                sample_file()
            stopping = distributed.any_signal(stop.signum)  # all processes stop at one step
            if step % t.checkpoint_every == 0 or stopping is not None:
                saved = checkpoint()
            if stopping is not None:
                name = signal.Signals(stopping).name
                raise Interrupted(
                    f"{name} at step {step}: saved {saved}; continue with "
                    f"`gantool resume {run_dir}`",
                    stopping,
                )
    seconds = time.perf_counter() - started

    if step % t.checkpoint_every != 0:  # the last step always gets a checkpoint
        checkpoint()
    if not main:
        return {"status": "completed", "run_dir": str(run_dir), "step": step}
    if (world := distributed.world_size()) > 1:
        log.info("All %d processes held the same weights at every checkpoint", world)
    samples = run_dir / "samples" / f"step_{step:07d}.png"
    if not samples.exists():  # the last step always gets a sample image
        sample_file()
    rows = metrics.rows()
    _plots(cfg, rows, run_dir)
    results = evaluate(cfg, gan.sampler, device, t.num_eval_samples) if t.eval_at_end else {}
    if board:
        board.scalars(step, results)
        board.close()
    summary = {
        "status": "completed",
        "run_dir": str(run_dir),
        "step": step,
        "first_step_time": first_step_time,  # Unix time: what came before it is start-up
        "train_seconds": seconds,
        "wall_seconds": time.perf_counter() - entered,
        "samples": str(samples),
        "final": rows[-1] if rows else {},
        "eval": results,
        "objective": {"name": t.objective, "value": results.get(t.objective)},
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def _plots(cfg: Config, rows: list[dict], run_dir: Path) -> None:
    """End-of-run pictures: the sample images as an animation, the losses and, for the
    Gaussian, G's moments over training."""
    progress_gif(
        sorted((run_dir / "samples").glob("step_*.png")), run_dir / "samples" / "progress.gif"
    )
    if not rows:
        return
    training_curves(rows, run_dir / "plots" / "losses.png")
    if isinstance(cfg.dataset, GaussianConfig):
        moments_over_training(
            rows, cfg.dataset.mean, cfg.dataset.std, run_dir / "plots" / "moments.png"
        )


# Below this many parameters in G and D, one CPU thread beats several: each op is too small to
# share out, and threads waiting on each other cost more (much more on a busy machine).
SMALL_MODEL = 100_000
TORCH_THREADS = torch.get_num_threads()  # torch's own choice (OMP_NUM_THREADS, or the cores)


def cpu_threads(requested: int, gan: GAN) -> int:
    """device.num_threads, or for 0 (auto) one thread for a small model, else torch's own."""
    if requested > 0:
        return requested
    size = sum(p.numel() for net in (gan.generator, gan.discriminator) for p in net.parameters())
    return 1 if size < SMALL_MODEL else TORCH_THREADS


# Dataset settings that say where the files are, not what is learned.
RESUME_MAY_CHANGE = {"dataset.root", "dataset.download"}


def _check_same_model(saved: dict, cfg: Config, path: Path) -> None:
    """Refuse to resume when a setting that shapes the model or the data has changed.

    Lengths, intervals, learning rates and the like may change; they only steer what follows.
    """
    now = _flatten(to_dict(cfg))
    before = _flatten(saved)
    keys = sorted(
        k
        for k in before.keys() | now.keys()
        if k.startswith(("model.", "dataset."))
        and k not in RESUME_MAY_CHANGE
        and before.get(k) != now.get(k)
    )
    if keys:
        changes = ", ".join(f"{k} ({before.get(k)} -> {now.get(k)})" for k in keys)
        raise GantoolError(f"cannot resume from {path}: these settings differ: {changes}")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
