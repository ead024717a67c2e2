"""The training step and loop. File formats live in checkpoint.py, outputs.py and plots.py."""

from __future__ import annotations

import copy
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gantool import losses
from gantool.checkpoint import (
    latest_checkpoint,
    load_latest,
    remove_temporaries,
    save_checkpoint,
)
from gantool.config import Config, GaussianConfig, check_intervals, to_dict
from gantool.console import ProgressBar
from gantool.data import build_data
from gantool.device import resolve_device
from gantool.errors import GantoolError, Interrupted, first_line
from gantool.metrics import gaussian_report
from gantool.models import Discriminator, Generator, generate, sample_latent
from gantool.optim import build_optimizer
from gantool.outputs import MetricsLog, write_json
from gantool.plots import moments_over_training, training_curves
from gantool.rng import rng_state, seed_everything, set_rng_state
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


@dataclass
class GAN:
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
            g,
            d,
            build_optimizer(g.parameters(), cfg.optimizer.g),
            build_optimizer(d.parameters(), cfg.optimizer.d),
            ema,
        )

    @property
    def sampler(self) -> Generator:
        """The generator to draw samples from: the moving average when there is one."""
        return self.ema if self.ema is not None else self.generator

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """ema <- decay * ema + (1 - decay) * G for weights; BatchNorm statistics are copied."""
        for ema_p, p in zip(self.ema.parameters(), self.generator.parameters(), strict=True):
            ema_p.lerp_(p, 1 - decay)
        for ema_b, b in zip(self.ema.buffers(), self.generator.buffers(), strict=True):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return {
            name: part.state_dict()
            for name in self.__dataclass_fields__
            if (part := getattr(self, name)) is not None
        }

    def load_state_dict(self, state: dict) -> None:
        for name in self.__dataclass_fields__:
            part = getattr(self, name)
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
    batch_size = cfg.trainer.batch_size
    r1_gamma = cfg.loss.r1_gamma

    # --- D: real labelled 1, fake labelled 0 ---
    for _ in range(cfg.trainer.d_steps):
        real = data.next_batch()  # (B, data_dim)
        real.requires_grad_(r1_gamma > 0)  # R1 needs D's gradient with respect to x
        z = sample_latent(batch_size, cfg.model, device)  # (B, latent_dim)
        fake = G(z).detach()  # detach: D's loss must not reach G's weights
        real_logits, fake_logits = D(real), D(fake)  # (B, 1), or (1, 1) on moments
        d_loss = losses.d_loss(real_logits, fake_logits)
        if r1_gamma > 0:
            d_loss = d_loss + r1_gamma / 2 * losses.r1_penalty(real_logits, real)
        gan.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        gan.d_optimizer.step()

    # --- G: fresh noise; fake labelled real (non_saturating) or the minimax loss ---
    for _ in range(cfg.trainer.g_steps):
        z = sample_latent(batch_size, cfg.model, device)
        fake = G(z)  # no detach: G learns through D's judgement of its samples
        g_loss = losses.g_loss(D(fake), cfg.loss.g_loss)
        gan.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()  # also fills D's gradients; D's next zero_grad clears them
        gan.g_optimizer.step()

    with torch.no_grad():
        return torch.stack(
            [
                d_loss,
                g_loss,
                torch.sigmoid(real_logits).mean(),
                torch.sigmoid(fake_logits).mean(),
                fake.mean(),
                fake.std(correction=0),
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
    t = cfg.trainer
    device = resolve_device(cfg.device.name)
    if cfg.device.num_threads > 0:
        torch.set_num_threads(cfg.device.num_threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(t.seed)
    data = build_data(cfg.dataset, t.batch_size, t.seed, device)
    if t.steps is not None:
        total_steps = t.steps
    else:  # each step uses d_steps batches
        total_steps = max(1, t.epochs * data.batches_per_epoch // t.d_steps)
        check_intervals(t, total_steps)
    gan = GAN.build(cfg, data.data_dim, device)
    # The same noise for every sample grid, so grids can be compared across steps.
    fixed_generator = torch.Generator(device).manual_seed(t.seed)
    fixed_noise = sample_latent(t.num_samples, cfg.model, device, fixed_generator)

    # Statistics summed since the last log row; checkpoints carry them so rows resume exactly.
    stats_sum, count = torch.zeros(len(STAT_KEYS), device=device), 0
    step = 0
    remove_temporaries(run_dir)
    latest = load_latest(run_dir)  # on CPU: load_state_dict copies onto the device
    if latest is not None:
        path, state = latest
        _check_same_model(state["config"], cfg, path)
        gan.load_state_dict(state["gan"])
        data.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        fixed_noise = state["fixed_noise"].to(device)
        stats_sum, count = state["stats"]["sum"].to(device), state["stats"]["count"]
        step = state["step"]
        log.info("Resumed from %s at step %d", path, step)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    # Rows after the checkpoint are logged again; so is a row for a partial interval.
    metrics.truncate_after(step if step % t.log_every == 0 else step - 1)
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

    def checkpoint() -> Path:
        check_finite()
        state = {
            "step": step,
            "gan": gan.state_dict(),
            "data": data.state_dict(),
            "rng": rng_state(),
            "fixed_noise": fixed_noise.cpu(),
            "stats": {"sum": stats_sum.cpu(), "count": count},
            "config": to_dict(cfg),
        }
        return save_checkpoint(state, run_dir, step, t.keep_checkpoints)

    def sample_file() -> None:
        path = run_dir / "samples" / f"step_{step:07d}.png"
        save_samples(generate(gan.sampler, fixed_noise), cfg.dataset, path, f"step {step}")

    log.info(
        "Training %s for %d steps on %s; run folder %s",
        cfg.dataset.name,
        total_steps,
        device,
        run_dir,
    )
    started = time.perf_counter()
    with ProgressBar(total_steps, step) as bar, StopRequest() as stop:
        while step < total_steps:
            stats = train_step(gan, data, cfg, device)
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
                metrics.append(row)
                if step % t.log_every == 0:  # a last, partial interval stays in the checkpoint
                    stats_sum.zero_()
                    count = 0
                bar.update(step, row)
            else:
                bar.update(step)
            if step % t.sample_every == 0:
                sample_file()
            if step % t.checkpoint_every == 0 or stop.signum is not None:
                saved = checkpoint()
            if stop.signum is not None:
                name = signal.Signals(stop.signum).name
                raise Interrupted(
                    f"{name} at step {step}: saved {saved}; continue with "
                    f"`gantool resume {run_dir}`",
                    stop.signum,
                )
    seconds = time.perf_counter() - started

    if step % t.checkpoint_every != 0:  # the last step always gets a checkpoint
        checkpoint()
    samples = run_dir / "samples" / f"step_{step:07d}.png"
    if not samples.exists():  # the last step always gets a sample image
        sample_file()
    summary = {
        "status": "completed",
        "run_dir": str(run_dir),
        "step": step,
        "train_seconds": seconds,
        "samples": str(samples),
        **_report(cfg, gan.sampler, metrics.rows(), run_dir, device),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def _report(
    cfg: Config, G: Generator, rows: list[dict], run_dir: Path, device: torch.device
) -> dict:
    """End-of-run plots and numbers: the last log row and, for the Gaussian, G's moments."""
    report: dict = {"final": rows[-1] if rows else {}}
    if rows:
        training_curves(rows, run_dir / "plots" / "losses.png")
    if isinstance(cfg.dataset, GaussianConfig):
        mean, std = cfg.dataset.mean, cfg.dataset.std
        if rows:
            moments_over_training(rows, mean, std, run_dir / "plots" / "moments.png")
        num = cfg.trainer.num_eval_samples
        # Its own noise generator: the report does not move the training RNG.
        z = sample_latent(num, cfg.model, device, torch.Generator(device).manual_seed(1))
        report["num_eval_samples"] = num
        report["gaussian"] = gaussian_report(generate(G, z), mean, std)
    return report


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
