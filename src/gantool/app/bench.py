"""`gantool bench`: how close training runs to what this machine allows, in one table.

Measured in one run, on the device `auto` would pick (or the one asked for):
- MNIST training throughput (images/s) of `experiment=seed_mnist` at batch 100 and 512;
- model FLOP utilisation: analytic matmul FLOPs per step x steps/s / the fp32 matmul rate
  measured here and now;
- the textbook baseline (per-image PIL -> ToTensor -> Normalize DataLoader, fresh noise for the
  G step, the same model and batch) and gantool's speed-up over it;
- Gaussian time-to-quality: whole `gantool train` processes, one per seed;
- on CUDA, the whole step as one CUDA graph (gantool.graph.bench_graph) at batch 100, 512
  and 4096, beside the eager step and a bare captured step (the ceiling), with MFU against
  the fp32 and the tf32 matmul rates;
- start-up: `gantool --help`, and `gantool train` up to its first step;
- on request, fidelity: the 50-line experiment as written (reference.py) against
  `experiment=seed_gaussian`, with and without reuse_fake, on the same seeds, on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gantool.app.reference import TARGET_MEAN, TARGET_STD, VARIANTS, fidelity
from gantool.config.compose import to_dict
from gantool.config.schema import Config
from gantool.core.console import console
from gantool.core.errors import GantoolError
from gantool.core.files import why_not_written, write_json
from gantool.datasets.mnist import file_names, load_mnist, raw_folder, split_present, write_idx
from gantool.datasets.registry import family, load_config, training_stream
from gantool.nn.dcgan import DCGANDiscriminator, DCGANGenerator
from gantool.nn.losses import BCE
from gantool.nn.mlp import Discriminator, Generator, sample_latent
from gantool.runtime.device import resolve_device
from gantool.training.gan import GAN
from gantool.training.graph import (
    WARMUP_STEPS,
    GraphStep,
    capturable_optimizers,
    capture,
    warming_up,
)
from gantool.training.step import STAT_KEYS, GANStep, StepSettings

ROUNDS = 5  # timed rounds per figure, taken in turn; each figure is their median
# A figure whose rounds spread wider than this ((highest - lowest) / median) was measured while
# the machine's speed changed: it is printed with a warning not to quote it.
SPREAD_TO_QUOTE = 0.2
MATMUL_SECONDS = 0.25  # each round's own measurement of the matmul rate
# The Gaussian quality bar: |Δmean| and |Δstd| at most 0.05, and KS at most 0.05.
QUALITY = {"mean": 0.05, "std": 0.05, "ks": 0.05}


@dataclass
class BenchOptions:
    out: Path  # bench.json and the Gaussian runs go here
    device: str = "auto"
    mnist_root: str = "data"  # real MNIST when its files are here, else random images
    steps: int = 300  # timed MNIST steps per measurement, after `warmup` untimed ones
    warmup: int = 20
    batch_sizes: tuple[int, ...] = (100, 512)
    graph_batch_sizes: tuple[int, ...] = (100, 512, 4096)  # CUDA only
    gaussian_seeds: int = 5  # whole `gantool train` processes; 0 skips them
    startup: bool = True
    fidelity_seeds: int = 0  # seeds of the 50-line fidelity check; 0 skips it
    fidelity_iterations: int = 5000
    dcgan_steps: int = 30  # timed DCGAN steps (batch 64, 28 px); 0 skips the row


# --- FLOPs ----------------------------------------------------------------------------------
def linear_sizes(module: nn.Module) -> list[tuple[int, int]]:
    """(in_features, out_features) of each Linear layer, in order."""
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def _pass_flops(
    sizes: list[tuple[int, int]], batch: int, weight_grads: bool, first_input_grad: bool
) -> tuple[int, int]:
    """Matmul FLOPs of one forward pass and of its backward pass through Linear layers.

    Forward: 2·B·in·out per layer. Backward: the same again for the weight gradient when the
    weights train, and for the input gradient of every layer but the first, whose input
    needs one only when something upstream trains (G's output, or R1's x).
    """
    forward = sum(2 * batch * i * o for i, o in sizes)
    backward = forward if weight_grads else 0
    backward += forward - (0 if first_input_grad else 2 * batch * sizes[0][0] * sizes[0][1])
    return forward, backward


def step_flops(cfg: Config, gan: GAN) -> int:
    """Analytic matmul FLOPs of one `train_step`, counted from the layer sizes.

    Elementwise work (activations, losses, the optimizer) is left out: it is small next to the
    matmuls, and it is not what a matmul rate measures. R1's double backward is not counted.
    """
    if cfg.loss.r1_gamma > 0 or cfg.model.d.features != "samples":
        raise GantoolError("FLOPs are counted for sample-based D without R1 only")
    t = cfg.trainer
    g, d = linear_sizes(gan.generator), linear_sizes(gan.discriminator)
    g_fwd, _ = _pass_flops(g, t.batch_size, weight_grads=False, first_input_grad=False)
    d_fwd, d_bwd = _pass_flops(d, t.batch_size, weight_grads=True, first_input_grad=False)
    # D update: G forward (no graph), D forward and backward on real and on fake.
    d_update = g_fwd + 2 * (d_fwd + d_bwd)
    # G update: G forward (unless the D update's is reused), D forward, backward through
    # frozen D (input gradients only), then G's backward.
    _, g_bwd = _pass_flops(g, t.batch_size, weight_grads=True, first_input_grad=False)
    _, d_input_bwd = _pass_flops(d, t.batch_size, weight_grads=False, first_input_grad=True)
    g_update = g_fwd + d_fwd + d_input_bwd + g_bwd
    reused = g_fwd if t.reuse_fake else 0
    return t.d_steps * d_update + t.g_steps * g_update - reused


def matmul_rate(
    device: torch.device, size: int = 2048, seconds: float = 1.0, tf32: bool = False
) -> float:
    """Measured fp32 matmul FLOP/s (with `tf32`, TensorFloat-32's on CUDA): the best of
    repeated size x size products."""
    if tf32:
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            return matmul_rate(device, size, seconds)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best, spent = 0.0, 0.0
    while spent < seconds:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        _sync(device)
        dt = time.perf_counter() - t0
        spent += dt
        best = max(best, 4 * 2 * size**3 / dt)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- MNIST throughput -------------------------------------------------------------------------
def mnist_root(requested: str, scratch: Path) -> tuple[str, str]:
    """A dataset.root with MNIST's test split, and what it holds: real files, or random images
    written under `scratch` when there are none (speed does not depend on the pixels)."""
    if split_present(requested, "test"):
        return requested, f"MNIST test split in {Path(requested).resolve()}"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10_000, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 10_000, dtype=np.uint8)
    raw = raw_folder(scratch)
    raw.mkdir(parents=True, exist_ok=True)
    for name, array in zip(file_names("test"), (images, labels), strict=True):
        write_idx(raw / name, array)
    where = raw_folder(requested).resolve()
    return str(scratch), f"random images (no MNIST test split in {where})"


def mnist_config(root: str, batch_size: int, device: str, reuse_fake: bool) -> Config:
    return load_config(
        [
            "experiment=seed_mnist",
            f"dataset.root={root}",
            "dataset.split=test",
            "dataset.download=false",
            f"trainer.batch_size={batch_size}",
            f"trainer.reuse_fake={reuse_fake}",
            f"device={device}",
        ]
    )


def race(
    steps: dict[str, Callable[[], object]], device: torch.device, opts: BenchOptions
) -> tuple[dict[str, list[float]], list[float]]:
    """Steps per second of each loop in each of ROUNDS rounds sharing opts.steps, the loops
    taken in turn; and the fp32 matmul rate measured at the start of each round. Taking turns
    puts the loops, and the matmul rate they are divided by, under the same conditions when
    something else on the machine comes and goes."""
    for step in steps.values():
        for _ in range(opts.warmup):
            step()
    per_round = max(1, opts.steps // ROUNDS)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    matmul = []
    for _ in range(ROUNDS):
        matmul.append(matmul_rate(device, seconds=MATMUL_SECONDS))
        for name, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(per_round):
                step()
            _sync(device)
            rates[name].append(per_round / (time.perf_counter() - t0))
    return rates, matmul


def figure(values: list[float]) -> dict:
    """A measured figure: the median of its rounds, their range, and whether they agree well
    enough to quote."""
    ordered = sorted(values)
    middle = ordered[len(ordered) // 2]
    spread = (ordered[-1] - ordered[0]) / middle if middle else float("inf")
    return {
        "median": middle,
        "low": ordered[0],
        "high": ordered[-1],
        "spread": spread,
        "quotable": spread <= SPREAD_TO_QUOTE,
        "rounds": values,
    }


def gantool_loop(cfg: Config, device: torch.device) -> tuple[Callable[[], object], int]:
    """gantool's training step for this config, and its matmul FLOPs."""
    gan, data = fresh(cfg, device)
    step = GANStep(gan, StepSettings.of(cfg), device)
    return lambda: step(data), step_flops(cfg, gan)


def fresh(cfg: Config, device: torch.device) -> tuple[GAN, object]:
    """A new GAN and training stream for cfg, seeded 0."""
    torch.manual_seed(0)
    data = training_stream(cfg, device, seed=0)
    shape = family(cfg.dataset).sample_shape(cfg.dataset)
    gan = GAN.build(cfg.model, cfg.optimizer, cfg.trainer.ema_decay, shape, device)
    return gan, data


def per_image_batches(cfg: Config, batch: int) -> Callable[[], torch.Tensor]:
    """The tutorials' data pipeline, as the textbook loops read MNIST: a Dataset that turns
    each image into a PIL image, then ToTensor and Normalize; a shuffling DataLoader without
    workers that collates them. Returns the next batch (B, 1, 28, 28), a new epoch when one
    ends."""
    from torchvision import transforms  # 3 s to import; only the textbook loops use it

    images, labels = load_mnist(cfg.dataset)
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])

    class PerImage(Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            return to_tensor(Image.fromarray(images[i].numpy(), mode="L")), int(labels[i])

    loader = DataLoader(PerImage(), batch_size=batch, shuffle=True, drop_last=True)
    batches = iter(())

    def next_batch() -> torch.Tensor:
        nonlocal batches
        try:
            x, _ = next(batches)
        except StopIteration:  # a new epoch
            batches = iter(loader)
            x, _ = next(batches)
        return x

    return next_batch


def textbook_loop(cfg: Config, device: torch.device) -> Callable[[], None]:
    """The loop of the PyTorch tutorials: a Dataset that turns each image into a PIL image,
    then ToTensor and Normalize; a DataLoader that collates them; fresh noise for G's update;
    and the same G, D, Adam settings and batch as gantool, on logits with BCEWithLogitsLoss."""
    batch, latent = cfg.trainer.batch_size, cfg.model.latent_dim
    torch.manual_seed(0)
    G = Generator(cfg.model, 784).to(device)
    D = Discriminator(cfg.model, 784).to(device)
    g_opt = torch.optim.Adam(G.parameters(), lr=cfg.optimizer.g.lr, betas=cfg.optimizer.g.betas)
    d_opt = torch.optim.Adam(D.parameters(), lr=cfg.optimizer.d.lr, betas=cfg.optimizer.d.betas)
    bce = nn.BCEWithLogitsLoss()
    ones = torch.ones(batch, 1, device=device)
    zeros = torch.zeros(batch, 1, device=device)
    next_batch = per_image_batches(cfg, batch)

    def step() -> None:
        real = next_batch().reshape(batch, -1).to(device)
        fake = G(torch.randn(batch, latent, device=device))
        d_loss = bce(D(real), ones) + bce(D(fake.detach()), zeros)
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        fake = G(torch.randn(batch, latent, device=device))
        g_loss = bce(D(fake), ones)
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()

    return step


# --- DCGAN ---------------------------------------------------------------------------------------
DCGAN_BATCH = 64  # pytorch/examples' batchSize


def dcgan_row(root: str, opts: BenchOptions, device: torch.device, report: Callable) -> dict:
    """DCGAN on MNIST's 28 px images (model=dcgan: widths [128, 64] and [64, 128], batch 64):
    gantool's step, with reuse_fake as experiment=dcgan, beside the textbook loop of
    pytorch/examples' dcgan/main.py on the same networks and batch, in turn."""
    overrides = [f"dataset.root={root}", "dataset.split=test", "dataset.download=false"]
    overrides += ["dataset=mnist", "model=dcgan", f"trainer.batch_size={DCGAN_BATCH}"]
    overrides += ["trainer.reuse_fake=true", f"device={opts.device}"]
    cfg = load_config(overrides)
    loops = {
        "gantool": dcgan_step(cfg, device),
        "gantool_bf16": dcgan_step(load_config([*overrides, "device.precision=bf16"]), device),
        "textbook": dcgan_textbook_loop(cfg, device),
    }
    timed = dataclasses.replace(opts, steps=opts.dcgan_steps, warmup=min(opts.warmup, 3))
    speed, _ = race(loops, device, timed)
    pairs = list(zip(speed["gantool"], speed["textbook"], strict=True))
    row = {
        "batch_size": DCGAN_BATCH,
        "images_per_s": figure([s * DCGAN_BATCH for s in speed["gantool"]]),
        "textbook_images_per_s": figure([t * DCGAN_BATCH for t in speed["textbook"]]),
        "speedup_vs_textbook": figure([s / t for s, t in pairs]),
        # device.precision=bf16: the forward passes under bfloat16 autocast
        "bf16_images_per_s": figure([s * DCGAN_BATCH for s in speed["gantool_bf16"]]),
        "bf16_speedup_vs_textbook": figure(
            [s / t for s, t in zip(speed["gantool_bf16"], speed["textbook"], strict=True)]
        ),
    }
    report(
        f"DCGAN 28 px batch {DCGAN_BATCH}: {row['images_per_s']['median']:,.0f} images/s, "
        f"{row['speedup_vs_textbook']['median']:.2f}x the textbook loop; bf16 "
        f"{row['bf16_speedup_vs_textbook']['median']:.2f}x"
    )
    return row


def dcgan_step(cfg: Config, device: torch.device) -> Callable[[], object]:
    """gantool's step for a DCGAN config (no FLOP count: step_flops counts Linear layers)."""
    gan, data = fresh(cfg, device)
    step = GANStep(gan, StepSettings.of(cfg), device)
    return lambda: step(data)


def dcgan_textbook_loop(cfg: Config, device: torch.device) -> Callable[[], None]:
    """pytorch/examples' dcgan/main.py iteration, on MNIST through a per-image Dataset
    (PIL, ToTensor, Normalize) and a DataLoader without workers: D on the real batch and on
    fresh fakes (two backward passes), then G through D's judgement of the same fakes, with
    Sigmoid and BCELoss; the same networks (gantool's DCGAN modules) and Adam settings."""
    torch.manual_seed(0)
    shape = (1, 28, 28)
    netG, netD = DCGANGenerator(cfg.model, shape).to(device), DCGANDiscriminator(cfg.model, shape)
    netD = netD.to(device)
    opt = cfg.optimizer
    optimizerD = torch.optim.Adam(netD.parameters(), lr=opt.d.lr, betas=tuple(opt.d.betas))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=opt.g.lr, betas=tuple(opt.g.betas))
    criterion = nn.BCELoss()
    next_batch = per_image_batches(cfg, DCGAN_BATCH)

    def step() -> None:
        real = next_batch().to(device).flatten(1)
        ones = torch.ones(DCGAN_BATCH, device=device)
        netD.zero_grad()
        criterion(torch.sigmoid(netD(real)).view(-1), ones).backward()
        fake = netG(torch.randn(DCGAN_BATCH, cfg.model.latent_dim, device=device))
        criterion(torch.sigmoid(netD(fake.detach())).view(-1), ones * 0).backward()
        optimizerD.step()
        netG.zero_grad()
        criterion(torch.sigmoid(netD(fake)).view(-1), ones).backward()
        optimizerG.step()

    return step


# --- whole processes ----------------------------------------------------------------------------
def gantool_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gantool", *args]


def gaussian_time_to_quality(seed: int, device: str, folder: Path) -> dict:
    """Run the Gaussian default as a user would, and judge its end-of-run evaluation."""
    run_dir = folder / f"seed_{seed}"
    command = gantool_command(
        "train", f"trainer.seed={seed}", f"device={device}", f"hydra.run.dir={run_dir}"
    )
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise GantoolError(f"`{' '.join(command)}` failed: {done.stderr.strip()[-500:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    ev, target = summary["eval"], load_config([]).dataset
    gaps = {
        "mean": abs(ev["eval/mean"] - target.mean),
        "std": abs(ev["eval/std"] - target.std),
        "ks": ev["eval/ks"],
    }
    return {
        "seed": seed,
        "wall_seconds": wall,
        "steps": summary["step"],
        "steps_per_s": summary["step"] / summary["train_seconds"],
        **{f"abs_delta_{k}" if k != "ks" else k: v for k, v in gaps.items()},
        "w1": ev["eval/w1"],
        "reached": all(gaps[k] <= QUALITY[k] for k in QUALITY),
        "run_dir": str(run_dir),
    }


def startup_times(device: str, folder: Path) -> dict:
    """`gantool --help` (best of 3), and `gantool train` up to its first step."""
    helps = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(gantool_command("--help"), capture_output=True, check=True)
        helps.append(time.perf_counter() - t0)
    run_dir = folder / "startup"
    started = time.time()
    subprocess.run(
        gantool_command(
            "train",
            "trainer.steps=1",
            "trainer.log_every=1",
            "trainer.sample_every=1",
            "trainer.checkpoint_every=1",
            "trainer.eval_at_end=false",
            f"device={device}",
            f"hydra.run.dir={run_dir}",
        ),
        capture_output=True,
        check=True,
    )
    first_step = json.loads((run_dir / "summary.json").read_text())["first_step_time"]
    return {"help_seconds": min(helps), "train_to_first_step_seconds": first_step - started}


# --- the whole bench ------------------------------------------------------------------------
def command(opts: BenchOptions) -> None:
    """`gantool bench`: measure, print the tables, say where bench.json is."""
    results = run_bench(opts, report=lambda line: console.print(line, highlight=False))
    print_bench(results)
    console.print(f"Wrote {opts.out / 'bench.json'}")


def run_bench(opts: BenchOptions, report: Callable[[str], None] = print) -> dict:
    """Measure everything, write OUT/bench.json, and return what it holds."""
    device = resolve_device(opts.device)
    if opts.fidelity_seeds > 0 and (opts.out / "fidelity").exists():  # refused before any write
        raise GantoolError(
            f"{opts.out / 'fidelity'} holds an earlier fidelity check: choose another --out"
        )
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
        probe = opts.out / ".bench-write-test"
        probe.write_bytes(b"")  # bench.json must be writable before minutes of measuring
        probe.unlink()
    except OSError as e:
        raise GantoolError(f"cannot write into --out {opts.out}: {why_not_written(e)}") from e
    scratch = opts.out / "random_mnist"
    root, data_note = mnist_root(opts.mnist_root, scratch)
    report(f"Measuring on {device}; MNIST data: {data_note}")
    results: dict = {
        "machine": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "mnist_data": data_note,
    }
    results["mnist"], rates = mnist_rows(root, opts, device, report)
    results["matmul_fp32_flops_per_s"] = figure(rates)
    rate = results["matmul_fp32_flops_per_s"]["median"]
    results["graph"] = graph_rows(root, opts, device, rate, report)
    if opts.dcgan_steps > 0:
        results["dcgan"] = dcgan_row(root, opts, device, report)
    shutil.rmtree(scratch, ignore_errors=True)
    write_json(opts.out / "bench.json", results)

    if opts.gaussian_seeds > 0:
        results["gaussian"] = gaussian_runs(opts, report)
        write_json(opts.out / "bench.json", results)
    if opts.startup:
        results["startup"] = startup_times(opts.device, opts.out)
        write_json(opts.out / "bench.json", results)
    if opts.fidelity_seeds > 0:  # on CPU with one thread, whatever the device: see reference.py
        results["fidelity"] = fidelity(
            opts.fidelity_seeds, opts.out / "fidelity", opts.fidelity_iterations, report
        )
        write_json(opts.out / "bench.json", results)
    return results


def mnist_rows(
    root: str, opts: BenchOptions, device: torch.device, report: Callable[[str], None]
) -> tuple[list[dict], list[float]]:
    """seed_mnist's rows at each batch size (the preset, with reuse_fake, beside the textbook
    loop), and the matmul rates measured in their rounds."""
    rows, rates = [], []
    for batch in opts.batch_sizes:
        preset, preset_flops = gantool_loop(mnist_config(root, batch, opts.device, False), device)
        reused, reused_flops = gantool_loop(mnist_config(root, batch, opts.device, True), device)
        textbook = textbook_loop(mnist_config(root, batch, opts.device, False), device)
        loops = {"preset": preset, "reused": reused, "textbook": textbook}
        speed, matmul = race(loops, device, opts)
        rates += matmul
        for reuse, name, flops in ((False, "preset", preset_flops), (True, "reused", reused_flops)):
            pairs = list(zip(speed[name], matmul, speed["textbook"], strict=True))
            row = {
                "batch_size": batch,
                "reuse_fake": reuse,
                "flops_per_step": flops,
                "images_per_s": figure([s * batch for s in speed[name]]),
                # Each round's FLOP rate over the matmul rate measured in the same round.
                "mfu": figure([flops * s / m for s, m, _ in pairs]),
                "textbook_images_per_s": figure([t * batch for t in speed["textbook"]]),
                "speedup_vs_textbook": figure([s / t for s, _, t in pairs]),
            }
            rows.append(row)
            report(
                f"seed_mnist batch {batch}{' reuse_fake' if reuse else ''}: "
                f"{row['images_per_s']['median']:,.0f} images/s, "
                f"MFU {row['mfu']['median']:.0%}, "
                f"{row['speedup_vs_textbook']['median']:.2f}x the textbook loop"
            )
    return rows, rates


def gaussian_runs(opts: BenchOptions, report: Callable[[str], None]) -> dict:
    """The Gaussian default's time to quality, one whole `gantool train` process per seed."""
    folder = opts.out / "gaussian"
    runs = []
    for seed in range(opts.gaussian_seeds):
        runs.append(gaussian_time_to_quality(seed, opts.device, folder))
        r = runs[-1]
        report(
            f"Gaussian seed {seed}: {r['wall_seconds']:.1f} s whole process, "
            f"{'reached' if r['reached'] else 'did NOT reach'} the bar"
        )
    trainer = to_dict(load_config([f"device={opts.device}"]))["trainer"]
    return {"config": trainer, "bar": QUALITY, "runs": runs}


def graph_rows(
    root: str, opts: BenchOptions, device: torch.device, rate: float, report: Callable
) -> dict | None:
    """On CUDA: seed_mnist's step captured as one CUDA graph, beside the eager step and the
    bare captured ceiling, with MFU against the fp32 and tf32 matmul rates. None elsewhere."""
    if device.type != "cuda":
        report("CUDA graph step: not measured (it needs a CUDA device)")
        return None

    tf32 = matmul_rate(device, tf32=True)
    report(f"tf32 matmul rate: {tf32 / 1e9:.1f} GFLOP/s")
    cfg = mnist_config(root, opts.graph_batch_sizes[0], opts.device, False)
    gan = GAN.build(cfg.model, cfg.optimizer, 0.0, (784,), device)
    per_image = step_flops(cfg, gan) / cfg.trainer.batch_size  # the same at any batch size
    rows = bench_graph(cfg, opts.graph_batch_sizes, opts.steps, opts.warmup)
    for row in rows:
        batch = row["batch_size"]
        flops = per_image * row["graph_images_per_s"]
        row.update(mfu_fp32=flops / rate, mfu_tf32=flops / tf32)
        report(
            f"seed_mnist batch {batch}: graph {row['graph_images_per_s']:,.0f} images/s "
            f"({row['graph_speedup']:.1f}x eager, {row['graph_share_of_ceiling']:.0%} of the "
            f"bare graph), MFU {row['mfu_fp32']:.1%} fp32, {row['mfu_tf32']:.1%} tf32"
        )
    return {"tf32_matmul_flops_per_s": tf32, "rows": rows}


def print_bench(results: dict) -> None:
    """The bench's tables, from what run_bench returned (or a bench.json)."""
    rate = results["matmul_fp32_flops_per_s"]
    m = results["machine"]
    table = Table(
        title=f"MNIST training, experiment=seed_mnist, on {m['device']} ({m['device_name']}, "
        f"{m['torch_threads']} torch threads); fp32 matmul rate {_figure(rate, 1e-9)} GFLOP/s",
        title_justify="left",
        caption=f"data: {results['mnist_data']}. Each figure is the median of {ROUNDS} rounds "
        "taken in turn, ± half their range. reuse_fake: G's forward pass of the D update is "
        "reused for the G update (the preset draws fresh noise instead). MFU: analytic matmul "
        "FLOPs per step x steps/s / the matmul rate measured in the same round.",
        caption_justify="left",
    )
    for col in ("batch", "reuse_fake", "images/s", "MFLOP/step", "MFU", "× textbook"):
        table.add_column(col, justify="right")
    unsure = []
    for r in results["mnist"]:
        table.add_row(
            str(r["batch_size"]),
            "yes" if r["reuse_fake"] else "no (preset)",
            _figure(r["images_per_s"]),
            f"{r['flops_per_step'] / 1e6:,.0f}",
            _figure(r["mfu"], 100, "%"),
            _figure(r["speedup_vs_textbook"], digits=2),
        )
        keys = ("images_per_s", "mfu", "speedup_vs_textbook", "textbook_images_per_s")
        if not all(r[k]["quotable"] for k in keys):
            unsure.append(f"batch {r['batch_size']}{' reuse_fake' if r['reuse_fake'] else ''}")
    console.print(table)
    base = Table(title="The textbook loop (per-image DataLoader)", title_justify="left")
    for col in ("batch", "images/s"):
        base.add_column(col, justify="right")
    for r in results["mnist"]:
        if not r["reuse_fake"]:
            base.add_row(str(r["batch_size"]), _figure(r["textbook_images_per_s"]))
    console.print(base)
    if unsure or not rate["quotable"]:
        console.print(
            f"[yellow]warning:[/] the rounds of {', '.join(unsure) or 'the matmul rate'} spread "
            f"more than {SPREAD_TO_QUOTE:.0%}: the machine's speed changed while they ran "
            "(other work?). Do not quote them; measure again on a quiet machine."
        )
    if results.get("dcgan"):
        d = results["dcgan"]
        console.print(
            f"DCGAN, 28 px MNIST, batch {d['batch_size']}: gantool "
            f"{_figure(d['images_per_s'])} images/s, pytorch/examples' loop "
            f"{_figure(d['textbook_images_per_s'])} images/s: "
            f"{_figure(d['speedup_vs_textbook'], digits=2)}x; with device.precision=bf16 "
            f"{_figure(d['bf16_images_per_s'])} images/s, "
            f"{_figure(d['bf16_speedup_vs_textbook'], digits=2)}x"
        )
    if results.get("graph"):
        _print_graph(results["graph"])
    if "gaussian" in results:
        _print_gaussian(results["gaussian"])
    if "startup" in results:
        s = results["startup"]
        console.print(
            f"Start-up: `gantool --help` {s['help_seconds']:.2f} s; `gantool train` to its "
            f"first step {s['train_to_first_step_seconds']:.2f} s"
        )
    if "fidelity" in results:
        print_fidelity(results["fidelity"])


def _print_graph(graph_results: dict) -> None:
    graph = Table(
        title="The step as one CUDA graph (trainer.cuda_graph): images/s; the ceiling is "
        "the same networks' bare D and G update, captured, with none of gantool's "
        "bookkeeping",
        title_justify="left",
    )
    for col in ("batch", "eager", "graph", "ceiling", "graph/eager", "graph/ceiling"):
        graph.add_column(col, justify="right")
    for col in ("MFU fp32", "MFU tf32"):
        graph.add_column(col, justify="right")
    for r in graph_results["rows"]:
        graph.add_row(
            str(r["batch_size"]),
            f"{r['eager_images_per_s']:,.0f}",
            f"{r['graph_images_per_s']:,.0f}",
            f"{r['ceiling_images_per_s']:,.0f}",
            f"{r['graph_speedup']:.1f}x",
            f"{r['graph_share_of_ceiling']:.0%}",
            f"{r['mfu_fp32']:.1%}",
            f"{r['mfu_tf32']:.1%}",
        )
    console.print(graph)


def _print_gaussian(g: dict) -> None:
    bar = g["bar"]
    table = Table(
        title="Gaussian default, time to quality: whole `gantool train` processes, "
        f"bar |Δmean| ≤ {bar['mean']}, |Δstd| ≤ {bar['std']}, KS ≤ {bar['ks']}",
        title_justify="left",
    )
    for col in ("seed", "wall s", "steps", "steps/s", "|Δmean|", "|Δstd|", "KS", "reached"):
        table.add_column(col, justify="right")
    for r in g["runs"]:
        table.add_row(
            str(r["seed"]),
            f"{r['wall_seconds']:.1f}",
            str(r["steps"]),
            f"{r['steps_per_s']:.0f}",
            f"{r['abs_delta_mean']:.3f}",
            f"{r['abs_delta_std']:.3f}",
            f"{r['ks']:.3f}",
            "yes" if r["reached"] else "[red]no[/]",
        )
    console.print(table)


def _figure(f: dict, scale: float = 1.0, unit: str = "", digits: int = 0) -> str:
    """A figure as its median, ± half the spread of its rounds (relative to the median)."""
    median = f"{f['median'] * scale:,.{digits}f}{unit}"
    half = f["spread"] / 2
    return median if half < 0.005 else f"{median} ±{half:.0%}"


def print_fidelity(fid: dict) -> None:
    """The fidelity table: each seed's final mean and std per variant, and the counts."""
    near = fid["near_rule"]
    table = Table(
        title=f'Fidelity to "GAN in 50 lines", {fid["iterations"]:,} iterations, CPU, one '
        f"thread: final mean and std; near = |mean - {TARGET_MEAN}| ≤ {near['mean']} and "
        f"|std - {TARGET_STD}| ≤ {near['std']}",
        title_justify="left",
        caption="original: the algorithm as written (gantool.reference.gan50); preset: "
        "experiment=seed_gaussian; preset_reuse_fake: the same with trainer.reuse_fake=true.",
        caption_justify="left",
    )
    table.add_column("seed", justify="right")
    for variant in VARIANTS:
        table.add_column(variant, justify="right")
    runs, num = fid["runs"], fid["num_seeds"]
    for i in range(num):
        cells = [str(runs[VARIANTS[0]][i]["seed"])]
        for variant in VARIANTS:
            r = runs[variant][i]
            verdict = "near" if r["near"] else "[red]diverged[/]"
            cells.append(f"{r['mean']:.2f} {r['std']:.2f} {verdict}")
        table.add_row(*cells)
    counts = fid["near_counts"]
    table.add_row("near", *(f"{counts[v]} of {num}" for v in VARIANTS))
    console.print(table)


# --- the CUDA graph step ------------------------------------------------------------------------
def bench_graph(
    cfg: Config,
    batch_sizes: Sequence[int] = (64, 512, 4096),
    num_steps: int = 300,
    warmup: int = 20,
) -> list[dict]:
    """Images/s (real images per second: batch_size x steps/s) at each batch size, of

    - eager: the trainer's eager step (GANStep with the EMA update, summing the statistics);
    - graph: GraphStep, captured (the batch copy, one replay, summing the statistics);
    - ceiling: the same G and D, captured bare: one D and one G update on a fixed real batch,
      noise drawn in the graph, fused capturable Adam; no data stream, no statistics, no EMA,
      no settings (d_steps, R1, bf16 and reuse_fake are left out).

    cfg gives the model, the data and the device (device=cpu runs all three uncaptured: the
    rows say `captured`). Timed as `gantool bench` times, in interleaved rounds (race),
    after `warmup` untimed steps that include the capture.
    """
    device = resolve_device(cfg.device.name)
    opts = BenchOptions(out=Path(), steps=num_steps, warmup=max(warmup, WARMUP_STEPS + 1))
    rows = []
    for batch_size in batch_sizes:
        c = dataclasses.replace(
            cfg, trainer=dataclasses.replace(cfg.trainer, batch_size=batch_size)
        )
        loops = {
            "eager": _trainer_loop(c, device, graphed=False),
            "graph": _trainer_loop(c, device, graphed=True),
            "ceiling": _bare_loop(c, device),
        }
        speed, _ = race(loops, device, opts)
        images = {name: figure(rates)["median"] * batch_size for name, rates in speed.items()}
        rows.append(
            {
                "batch_size": batch_size,
                "device": str(device),
                "captured": device.type == "cuda",
                "eager_images_per_s": images["eager"],
                "graph_images_per_s": images["graph"],
                "ceiling_images_per_s": images["ceiling"],
                "graph_speedup": images["graph"] / images["eager"],
                "graph_share_of_ceiling": images["graph"] / images["ceiling"],
            }
        )
    return rows


def _trainer_loop(cfg: Config, device: torch.device, graphed: bool) -> Callable[[], None]:
    gan, data = fresh(cfg, device)
    settings = StepSettings.of(cfg)
    total = torch.zeros(len(STAT_KEYS), device=device)  # as Run sums the statistics
    if graphed:
        graph_step = GraphStep(cfg, gan, data, settings, device)
        return lambda: total.add_(graph_step.step())
    eager = GANStep(gan, settings, device)
    return lambda: total.add_(eager(data))


def _bare_loop(cfg: Config, device: torch.device) -> Callable[[], None]:
    """The ceiling: a bare GAN step of this model, captured (uncaptured without CUDA)."""
    gan, data = fresh(cfg, device)
    capturable_optimizers(gan, cfg)
    G, D, g_opt, d_opt = gan.generator, gan.discriminator, gan.g_optimizer, gan.d_optimizer
    real = data.next_batch()  # (B, data_dim): one fixed batch
    size = cfg.trainer.batch_size
    bce = BCE(cfg.loss)

    def step() -> torch.Tensor:
        fake = G(sample_latent(size, cfg.model, device))  # (B, data_dim)
        d_loss = bce.d_loss(D(real), D(fake.detach()))
        d_opt.zero_grad(set_to_none=False)
        d_loss.backward()
        d_opt.step()
        g_loss = bce.g_loss(D(fake))  # D's gradients too: the next D update zeroes them
        g_opt.zero_grad(set_to_none=False)
        g_loss.backward()
        g_opt.step()
        return g_loss

    if device.type != "cuda":
        return step
    stream = torch.cuda.Stream(device)
    for _ in range(WARMUP_STEPS):
        with warming_up(stream):
            step()
    graph, _ = capture(step, stream)
    return graph.replay
