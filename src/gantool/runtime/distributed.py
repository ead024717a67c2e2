"""Data-parallel training over several processes, as torchrun starts them.

    torchrun --nproc_per_node=N -m gantool train [OVERRIDES]

torchrun gives each process RANK, LOCAL_RANK and WORLD_SIZE, and MASTER_ADDR and MASTER_PORT
to meet at. With WORLD_SIZE above 1, `process_group` joins the processes: over NCCL on CUDA,
one GPU per process (cuda:LOCAL_RANK), over gloo on CPU. G and D train wrapped in
DistributedDataParallel, so every process applies the same averaged gradients and all hold the
same weights. Without torchrun, or with one process, every helper here does nothing, and a run
gives the numbers it gives without this module.

How the processes share the work:
- trainer.batch_size is the global batch: each process trains on batch_size / WORLD_SIZE
  samples, and draws as much noise.
- Every process draws the same global batch from the same seeded stream and keeps its own
  slice, so no two processes see the same sample in a step, and the stream's position (a
  checkpoint's data state) is the same whatever the number of processes.
- Each process has its own RNG streams for noise and dropout; checkpoints keep every rank's.
- BatchNorm layers become SyncBatchNorm1d: their statistics are the global batch's.
- Rank 0 alone reads and writes the run folder; the others get what it read by broadcast.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gantool.config.schema import Config
from gantool.core.errors import ConfigError, GantoolError, first_line
from gantool.runtime.device import resolve_device
from gantool.runtime.rng import seed_everything, set_rng_state

log = logging.getLogger(__name__)

T = TypeVar("T")

# A gloo group for agreements the host needs at once (a stop request): with NCCL, reading a
# reduced CUDA tensor back would make the host wait for the device every step.
_host_group: dist.ProcessGroup | None = None


def launched_world_size() -> int:
    """How many processes torchrun started for this run; 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that reads and writes the run folder and the console."""
    return rank() == 0


@contextlib.contextmanager
def process_group(cfg: Config) -> Iterator[None]:
    """Join the processes torchrun started for this run; leave the group when the block ends.

    A single process starts no group. The other ranks log warnings and errors only.
    """
    world = launched_world_size()
    if world == 1:
        yield
        return
    check_config(cfg, world)
    device = resolve_device(cfg.device.name)
    if device.type not in ("cuda", "cpu"):
        raise ConfigError(
            f"device={cfg.device.name} is {device.type}: multi-process training runs on cuda "
            "(NCCL) or cpu (gloo)"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        check_gpus(int(os.environ.get("LOCAL_WORLD_SIZE", world)), torch.cuda.device_count())
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # one GPU per process on a node
    try:
        dist.init_process_group(backend)  # meets at torchrun's MASTER_ADDR:MASTER_PORT
    except (RuntimeError, ValueError) as e:  # a rendezvous that times out, a missing variable
        raise GantoolError(f"cannot join the other {world - 1} processes: {first_line(e)}") from e
    global _host_group
    _host_group = dist.new_group(backend="gloo") if backend != "gloo" else None  # None: WORLD
    if rank() > 0:
        logging.getLogger().setLevel(logging.WARNING)
    log.info(
        "Data-parallel over %d processes (%s): %d of each batch's %d samples per process",
        world,
        backend,
        cfg.trainer.batch_size // world * cfg.model.d.pack,
        cfg.trainer.batch_size * cfg.model.d.pack,
    )
    try:
        yield
    except RuntimeError as e:  # torch.distributed's errors are RuntimeErrors too
        peer_gone = "closed by peer" in str(e)  # gloo, when another process has exited
        if not (peer_gone or isinstance(e, dist.DistError)):
            raise
        detail = "" if peer_gone else f" ({first_line(e)})"
        raise GantoolError(
            f"lost touch with another process of this run{detail}; its own error says why"
        ) from e
    finally:
        _host_group = None
        # DDP's modules hold the group through reference cycles; collected only after the
        # group is destroyed, they can abort the process as it exits.
        gc.collect()
        dist.destroy_process_group()


def check_config(cfg: Config, world: int) -> None:
    """The global batch must split evenly over the processes."""
    batch_size = cfg.trainer.batch_size
    if batch_size % world:
        raise ConfigError(
            f"trainer.batch_size={batch_size}: the global batch must split evenly over the "
            f"{world} processes; use a multiple of {world}"
        )
    if cfg.model.d.features == "moments" and batch_size // world < 4:
        raise ConfigError(
            f"trainer.batch_size={batch_size}: model.d.features=moments needs at least 4 "
            f"samples per process, {4 * world} over {world} processes"
        )


def check_gpus(processes_here: int, gpus: int) -> None:
    """NCCL needs one GPU per process: two processes on one GPU would wait on each other
    forever. Refused before any process group starts."""
    if processes_here > gpus:
        raise ConfigError(
            f"torchrun started {processes_here} processes on this machine but it has {gpus} "
            f"GPU{'s' if gpus != 1 else ''}: use --nproc_per_node={gpus} or fewer, or "
            "device=cpu (gloo) for more processes"
        )


# --- rank 0 reads, every rank learns ------------------------------------------------------------
def from_main(read: Callable[[], T]) -> T:
    """`read()` run on rank 0 alone; every rank returns its result, or raises its GantoolError."""
    if world_size() == 1:
        return read()
    box: list = [None]
    if is_main():
        try:
            box[0] = read()
        except GantoolError as e:  # the other ranks raise it too, instead of waiting forever
            box[0] = e
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], GantoolError):
        raise box[0]
    return box[0]


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block before the others do: they find what it downloaded."""
    if world_size() == 1:
        yield
        return
    if not is_main():
        dist.barrier(group=_host_group)
    yield
    if is_main():
        dist.barrier(group=_host_group)


def gather(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if world_size() == 1:
        return [value]
    values: list = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def mean(x: torch.Tensor) -> torch.Tensor:
    """`x` averaged over the ranks, the same on every rank. Needs no wait on the host."""
    if world_size() == 1:
        return x
    total = x.clone()
    dist.all_reduce(total)  # gloo has no AVG
    return total / world_size()


def any_signal(signum: int | None) -> int | None:
    """A stop signal that any rank received, on every rank: they all stop after the same step."""
    if world_size() == 1:
        return signum
    flag = torch.tensor([signum or 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_host_group)
    return int(flag) or None


# --- the modules --------------------------------------------------------------------------------
def wrap(module: nn.Module) -> nn.Module:
    """The module as several processes train it: BatchNorm over the global batch, gradients
    averaged over the ranks during backward. The module itself is returned on one process."""
    if world_size() == 1:
        return module
    # Weights and buffers are broadcast from rank 0 once, here. Running statistics need no
    # broadcast at each forward: SyncBatchNorm1d computes the same ones on every rank.
    return DistributedDataParallel(sync_batch_norm(module), forward_sync_buffers=False)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper: what checkpoints hold, with no `module.` prefix."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def sync_batch_norm(module: nn.Module) -> nn.Module:
    """Swap each BatchNorm1d and BatchNorm2d inside `module` for its synchronised twin with the
    same tensors."""
    for name, child in module.named_children():
        if type(child) in SYNCED:
            setattr(module, name, SYNCED[type(child)].sharing(child))
        else:
            sync_batch_norm(child)
    return module


class _SyncedStatistics:
    """BatchNorm whose training-mode statistics are the global batch's, over all ranks (per
    channel, over the batch and, for images, every position of the maps).

    torch.nn.SyncBatchNorm refuses CPU tensors, so gloo runs could not use it, and its backward
    cannot be differentiated again, which R1 on a D with BatchNorm needs. This is plain tensor
    code around an all-reduce whose backward is an all-reduce: any device, any order of
    derivative. Its state dict is BatchNorm's, so checkpoints do not depend on it.
    """

    @classmethod
    def sharing(cls, bn: nn.modules.batchnorm._BatchNorm):
        sync = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        if bn.affine:
            sync.weight, sync.bias = bn.weight, bn.bias  # the optimizer's Parameters
        if bn.track_running_stats:
            sync.running_mean, sync.running_var = bn.running_mean, bn.running_var
            sync.num_batches_tracked = bn.num_batches_tracked
        return sync.train(bn.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        x32 = x.float()  # (B, C) or (B, C, H, W) on this rank; statistics in float32 always
        dims = [0, *range(2, x.dim())]  # all but the channels
        per_channel = (1, -1) + (1,) * (x.dim() - 2)  # (C,) broadcast over the rest
        n = x.numel() // x.shape[1] * world_size()  # every rank holds an equal share
        # One all-reduce for both moments. They are taken about the running mean, the same on
        # every rank and near the batch mean, so E[d²] - E[d]² loses no precision.
        shift = self.running_mean.clone().float() if self.track_running_stats else None
        d = x32 - shift.view(per_channel) if shift is not None else x32
        sums = _AllReduceSum.apply(torch.cat([d.sum(dims), d.pow(2).sum(dims)])) / n  # (2C,)
        mean_d, mean_d2 = sums.chunk(2)
        mean = mean_d if shift is None else shift + mean_d  # (C,)
        var = (mean_d2 - mean_d.pow(2)).clamp_min(0.0)  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            self._track(mean.detach(), var.detach(), n)
        y = (x32 - mean.view(per_channel)) * torch.rsqrt(var.view(per_channel) + self.eps)
        if self.affine:
            y = y * self.weight.view(per_channel) + self.bias.view(per_channel)
        return y.to(x.dtype)

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        self.num_batches_tracked.add_(1)
        momentum = self.momentum
        if momentum is None:  # a cumulative average, as BatchNorm keeps then
            momentum = 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        unbiased = var * n / (n - 1)  # the running variance is unbiased, as in BatchNorm
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


class SyncBatchNorm1d(_SyncedStatistics, nn.BatchNorm1d):
    """BatchNorm1d over the global batch (the MLPs')."""


class SyncBatchNorm2d(_SyncedStatistics, nn.BatchNorm2d):
    """BatchNorm2d over the global batch (DCGAN's)."""


SYNCED = {nn.BatchNorm1d: SyncBatchNorm1d, nn.BatchNorm2d: SyncBatchNorm2d}


class _AllReduceSum(torch.autograd.Function):
    """The sum of a tensor over the ranks. Every rank's loss depends on that sum, so the
    gradient of each rank's input is again the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)  # through apply: differentiable again


def check_replicas(state: dict, step: int) -> None:
    """Raise unless every rank holds this same state, bit for bit (weights, buffers, moments).

    DDP keeps the replicas equal by construction; a checkpoint written by rank 0 speaks for
    all of them only if that really holds.
    """
    if world_size() == 1:
        return
    digests = gather(_digest(state))
    differ = [r for r, digest in enumerate(digests) if digest != digests[0]]
    if differ:
        raise GantoolError(
            f"at step {step} rank(s) {differ} hold different weights from rank 0; no "
            "checkpoint written (a bug: please report it)"
        )


def _digest(value) -> str:
    h = hashlib.sha256()

    def feed(v) -> None:
        if isinstance(v, torch.Tensor):
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        elif isinstance(v, dict):
            for key, item in v.items():
                h.update(repr(key).encode())
                feed(item)
        elif isinstance(v, list | tuple):
            for item in v:
                feed(item)
        else:
            h.update(repr(v).encode())

    feed(value)
    return h.hexdigest()


# --- data and randomness ------------------------------------------------------------------------
class Shard:
    """This rank's slice of each global batch of `stream`, which every rank draws alike."""

    def __init__(self, stream):
        self.stream = stream
        self.data_dim = stream.data_dim
        self.batches_per_epoch = stream.batches_per_epoch  # in global batches
        self.epoch_size = stream.epoch_size
        self.batch_size = stream.batch_size // world_size()
        self.rows = slice(rank() * self.batch_size, (rank() + 1) * self.batch_size)

    def next_batch(self) -> torch.Tensor:
        return self.stream.next_batch()[self.rows]  # (B / world, data_dim)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


def shard(stream):
    """The stream as this rank trains on it: a Shard under torchrun, else the stream itself."""
    return stream if world_size() == 1 else Shard(stream)


def seed_rank(seed: int, step: int = 0) -> None:
    """Give each rank above 0 RNG streams of its own, for its noise and dropout masks.

    Rank 0 keeps the streams of `seed`, those of a single process.
    """
    if rank() > 0:
        entropy = np.random.SeedSequence([seed, rank(), step])
        seed_everything(int(entropy.generate_state(1)[0]))


def restore_rng(by_rank: list[dict], seed: int, step: int) -> None:
    """This rank's RNG state, from a checkpoint's states of every rank (one for a single
    process); a fresh one where the run had fewer ranks."""
    if rank() < len(by_rank):
        set_rng_state(by_rank[rank()])
    else:
        seed_rank(seed, step)
