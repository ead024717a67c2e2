"""Several processes training one GAN: torchrun, DDP over gloo on CPU, one run folder.

The first test checks the arithmetic inside two gloo processes against one process that sees
the whole batch; the others run `torchrun -m gantool` as a user does.
"""

from __future__ import annotations

import copy
import datetime
import gc
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import FAST, compose_config, equal_state, only_run_dir
from gantool.app.job import train
from gantool.config.datasets import GaussianConfig
from gantool.config.schema import DiscriminatorConfig, GeneratorConfig, LossConfig, ModelConfig
from gantool.core.errors import ConfigError, GantoolError
from gantool.core.files import MetricsLog
from gantool.datasets.gaussian import GaussianStream
from gantool.nn import losses
from gantool.nn.dcgan import DCGANDiscriminator
from gantool.nn.losses import BCE
from gantool.nn.mlp import Discriminator, Generator
from gantool.runtime import distributed
from gantool.training.checkpointer import latest_checkpoint, list_checkpoints
from gantool.training.codec import load as load_checkpoint

# The Gaussian default (R1 on, so D's step differentiates twice) with BatchNorm in G and EMA.
DDP_RUN = [*FAST, "trainer.batch_size=256", "model.g.batch_norm=true", "trainer.ema_decay=0.5"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, cwd: Path, temp: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=N -m gantool ARGS`, with TMPDIR set to `temp`."""
    env = {**os.environ, "COLUMNS": "200", "TMPDIR": str(temp)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1"]
    command += [f"--nproc_per_node={nproc}", f"--master_port={free_port()}", "-m", "gantool"]
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


def _two_ranks_match_one_process(rank: int, rendezvous: str) -> None:
    """Run in each of two gloo processes: DDP's updates equal one process's on the whole batch."""
    timeout = datetime.timedelta(seconds=60)
    # A file to meet at, not a port: a free port found now may be taken by another test's
    # processes before both ranks bind it.
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2, timeout=timeout
    )
    try:
        _compare_with_one_process(rank)
    finally:
        # DDP's modules hold the group through reference cycles: collected after the group
        # is destroyed, they can abort the process as it exits ("terminate called without an
        # active exception", about one run in four).
        gc.collect()
        dist.destroy_process_group()


def _compare_with_one_process(rank: int) -> None:
    torch.manual_seed(0)  # the same modules and global batches on both ranks
    model = ModelConfig(latent_dim=2, g=GeneratorConfig(hidden=[8], batch_norm=True))
    G_one = Generator(model, 3)
    D_one = Discriminator(ModelConfig(d=DiscriminatorConfig([8, 8], batch_norm=True)), 3)
    G, D = distributed.wrap(copy.deepcopy(G_one)), distributed.wrap(copy.deepcopy(D_one))
    real, fake, z = torch.randn(8, 3), torch.randn(8, 3), torch.randn(8, 2)  # (8, ·) global
    mine = slice(4 * rank, 4 * rank + 4)

    # D's step with R1: double backward through synchronised BatchNorm and an all-reduce.
    def d_step(D, real, fake) -> None:
        real = real.clone().requires_grad_(True)
        real_logits = D(real)
        loss = BCE(LossConfig()).d_loss(real_logits, D(fake))
        (loss + 5.0 * losses.r1_penalty(real_logits, real)).backward()

    d_step(D, real[mine], fake[mine])
    d_step(D_one, real, fake)
    for p, p_one in zip(D.parameters(), D_one.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_one.grad)
    for b, b_one in zip(D.buffers(), D_one.buffers(), strict=True):  # running statistics
        torch.testing.assert_close(b, b_one)

    # The same for DCGAN's D: BatchNorm2d's statistics over the batch and the maps' positions.
    conv = ModelConfig(arch="dcgan", d=DiscriminatorConfig(channels=[2, 4], batch_norm=True))
    conv_one = DCGANDiscriminator(conv, (1, 16, 16))
    conv_ddp = distributed.wrap(copy.deepcopy(conv_one))
    images = torch.randn(8, 256), torch.randn(8, 256)
    d_step(conv_ddp, images[0][mine], images[1][mine])
    d_step(conv_one, *images)
    for p, p_one in zip(conv_ddp.parameters(), conv_one.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_one.grad)
    for b, b_one in zip(conv_ddp.buffers(), conv_one.buffers(), strict=True):
        torch.testing.assert_close(b, b_one)

    # G's step through a D that needs no gradients of its own.
    D.requires_grad_(False)
    D_one.requires_grad_(False)
    BCE(LossConfig()).g_loss(D(G(z[mine]))).backward()
    BCE(LossConfig()).g_loss(D_one(G_one(z))).backward()
    for p, p_one in zip(G.parameters(), G_one.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_one.grad)

    # The ranks' slices of a stream make up the stream's global batch, without overlap.
    stream = distributed.shard(GaussianStream(GaussianConfig(), 8, 7, torch.device("cpu")))
    whole = torch.cat(distributed.gather(stream.next_batch()))
    one = GaussianStream(GaussianConfig(), 8, 7, torch.device("cpu"))
    assert stream.batch_size == 4 and torch.equal(whole, one.next_batch())

    # Replicas that drift apart are caught before a checkpoint is written.
    distributed.check_replicas(distributed.unwrap(G).state_dict(), step=1)
    if rank == 1:
        with torch.no_grad():
            next(G.parameters()).add_(1.0)
    with pytest.raises(GantoolError, match=r"at step 2 rank\(s\) \[1\] hold different"):
        distributed.check_replicas(distributed.unwrap(G).state_dict(), step=2)


def test_ddp_updates_equal_one_process_on_the_global_batch(tmp_path: Path) -> None:
    rendezvous = str(tmp_path / "rendezvous")
    mp.spawn(_two_ranks_match_one_process, args=(rendezvous,), nprocs=2, join=True)


def test_two_processes_write_one_run_that_one_process_resumes(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = torchrun("train", *DDP_RUN, cwd=tmp_path, temp=temp)
    assert done.returncode == 0, done.stderr

    # One run folder, made by rank 0's Hydra; rank 1's temporary one is gone.
    run = only_run_dir(tmp_path / "outputs")
    assert len(list((tmp_path / "outputs").glob("*/*"))) == 1
    assert not list(temp.glob("gantool-rank*"))
    # One set of checkpoints, one metrics log, one summary on the console.
    assert [p.name for p in list_checkpoints(run)] == ["step_0000003.pt", "step_0000006.pt"]
    assert [r["step"] for r in MetricsLog(run / "metrics.jsonl").rows()] == [2, 4, 6]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert done.stdout.count("Run folder") == 1
    log = (run / "train.log").read_text()
    assert "Data-parallel over 2 processes (gloo): 128 of each batch's 256 samples" in log
    # Checked at each checkpoint (G, D, EMA, optimizers, bit for bit); a mismatch fails the run.
    assert "All 2 processes held the same weights at every checkpoint" in log

    state = load_checkpoint(latest_checkpoint(run))
    assert not any(k.startswith("module.") for part in state.gan.values() for k in part)
    first, second = state.rng  # rank 0's first
    assert not torch.equal(first["torch"], second["torch"])  # each rank draws its own noise

    # A checkpoint of two processes resumes in one.
    summary = train(compose_config([*DDP_RUN, "trainer.steps=9"]), run)
    assert summary["step"] == 9
    assert [r["step"] for r in MetricsLog(run / "metrics.jsonl").rows()] == [2, 4, 6, 8, 9]


# GAN variants under torchrun: what each process holds of a pack, a spectral norm's vectors,
# a critic's several steps, a class column.
VARIANTS = {
    "wgan_gp, spectral norm, packs of 2": [
        *FAST,
        "loss=wgan_gp",
        "trainer.d_steps=2",
        "model.d.spectral_norm=true",
        "model.d.pack=2",
        "trainer.batch_size=32",
    ],
    "conditional mnist, hinge": [
        "dataset=mnist",
        "dataset.split=test",
        "dataset.download=false",
        *FAST,
        "model.conditional=true",
        "loss=hinge",
        "trainer.batch_size=16",
        "trainer.eval_at_end=false",
    ],
}


# The conditional one is slow-only: the other carries the variants' DDP path in the default run.
@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(v, marks=pytest.mark.slow) if v.startswith("conditional") else v
        for v in VARIANTS
    ],
)
def test_gan_variants_train_under_torchrun(variant: str, tmp_path: Path, tiny_mnist: Path) -> None:
    args = VARIANTS[variant]
    if "dataset=mnist" in args:
        args = [*args, f"dataset.root={tiny_mnist}"]
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = torchrun("train", *args, cwd=tmp_path, temp=temp)
    assert done.returncode == 0, done.stderr
    run = only_run_dir(tmp_path / "outputs")
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert (
        "All 2 processes held the same weights at every checkpoint"
        in (run / "train.log").read_text()
    )


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_in_two(tmp_path: Path, tiny_mnist: Path) -> None:
    mnist = [
        "dataset=mnist",
        f"dataset.root={tiny_mnist}",
        "dataset.split=test",
        "dataset.download=false",
        *FAST,
        "trainer.batch_size=16",  # the MNIST default has BatchNorm in G
    ]
    temp = tmp_path / "tmp"
    temp.mkdir()
    once = torchrun("train", *mnist, "trainer.steps=3", cwd=tmp_path, temp=temp, nproc=1)
    assert once.returncode == 0, once.stderr
    run = only_run_dir(tmp_path / "outputs")
    assert len(load_checkpoint(latest_checkpoint(run)).rng) == 1

    resumed = torchrun("resume", str(run), "trainer.steps=6", cwd=tmp_path, temp=temp)
    assert resumed.returncode == 0, resumed.stderr
    assert only_run_dir(tmp_path / "outputs") == run
    assert "Resumed from" in (run / "train.log").read_text()
    state = load_checkpoint(latest_checkpoint(run))
    assert state.step == 6 and len(state.rng) == 2
    assert [r["step"] for r in MetricsLog(run / "metrics.jsonl").rows()] == [2, 4, 6]


@pytest.mark.slow
def test_a_two_process_run_resumed_in_two_continues_bit_for_bit(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    base = [*DDP_RUN, "model.g.dropout=0.2"]
    full, split = tmp_path / "full", tmp_path / "split"
    for run, steps in ((full, 6), (split, 4)):
        done = torchrun(
            "train",
            *base,
            f"trainer.steps={steps}",
            f"hydra.run.dir={run}",
            cwd=tmp_path,
            temp=temp,
        )
        assert done.returncode == 0, done.stderr
    resumed = torchrun("resume", str(split), "trainer.steps=6", cwd=tmp_path, temp=temp)
    assert resumed.returncode == 0, resumed.stderr

    a, b = (load_checkpoint(latest_checkpoint(run)) for run in (full, split))
    assert a.step == b.step == 6
    for key in ("gan", "data", "rng_by_rank", "stats"):
        assert equal_state(a[key], b[key]), key
    assert MetricsLog(full / "metrics.jsonl").rows() == MetricsLog(split / "metrics.jsonl").rows()


def test_a_batch_that_does_not_split_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"batch_size=1001: .* split evenly over the 2 proc"):
        distributed.check_config(compose_config([*FAST, "trainer.batch_size=1001"]), 2)
    moments = compose_config([*FAST, "model.d.features=moments", "trainer.batch_size=12"])
    distributed.check_config(moments, 2)
    with pytest.raises(ConfigError, match=r"moments needs at least 4 samples per process, 16"):
        distributed.check_config(moments, 4)
