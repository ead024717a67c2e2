"""The whole training step as one CUDA graph (trainer.cuda_graph).

On a GPU the step of these small MLPs is launch-bound: dozens of tiny kernels, each taking the
host longer to launch than the device to run. Captured once as a CUDA graph and replayed, a
step is one launch (issue 11: 9.5x the images/s in a bare script on an H100).

What the graph holds, and how each part stays right across replays:
- real data: the data streams are unchanged (so checkpoints and resume are too); before each
  replay the step's d_steps batches are copied into static buffers the graph reads;
- noise and dropout masks: drawn inside the graph from the device's default generator, which
  torch makes graph-safe: each replay reads the generator's offset and advances it by what
  the eager step would have drawn, so the numbers are the eager step's;
- gradients: zeroed in place, never freed (zero_grad(set_to_none=False)), so backward fills
  the same tensors at every replay;
- optimizers: Adam fused and capturable (its step count stays on the device), SGD fused;
- BatchNorm running statistics (their momentum is a number: no host read), the EMA update and
  the step's statistics: device ops inside the graph. The statistics come back in one static
  tensor, which the next replay overwrites.
R1 is ordinary autograd (a gradient of a gradient) and is captured like the rest. bf16 autocast
runs without its cache of cast weights (torch requires that of graphed autocast), which sums
the gradients of D's two passes in float32 instead of bfloat16: equal to the eager step to
float tolerance, where fp32 steps are equal bit for bit. Logging, sample pictures, checkpoints
and evaluation run between replays, outside the graph.

Capture follows torch's recipe: WARMUP_STEPS eager steps on a side stream (real training
steps, in the graph-safe form), then the capture on that stream, then one replay per step. A
resumed run captures afresh. If the capture fails, one log line says why and the run goes on
with the eager step. Where the graph does not apply (no CUDA device, several processes) the
trainer runs its eager step, unchanged. Without a GPU, GraphStep runs the graph-safe step
eagerly: the tests compare it with the eager step, and `gantool bench` can time it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator

import torch

from gantool.config.schema import Config
from gantool.core.errors import first_line
from gantool.nn.optim import build_optimizer
from gantool.runtime import distributed
from gantool.training.gan import GAN
from gantool.training.step import GANStep, StepSettings

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps before the capture, as in torch's whole-network example


def plan(
    cfg: Config, gan: GAN, data, settings: StepSettings, device: torch.device
) -> GraphStep | None:
    """The graph step for this run, or None for the eager step. One log line says why not
    when trainer.cuda_graph=true asked for it, or when `auto` meets a CUDA device it cannot
    use; `auto` elsewhere (CPU, MPS) says nothing. Called before any optimizer state exists."""
    wanted = cfg.trainer.cuda_graph
    if wanted is False:
        return None
    why_not = _reason_not(cfg, device)
    if why_not is None:
        return GraphStep(cfg, gan, data, settings, device)
    if wanted is True or device.type == "cuda":
        level = logging.WARNING if wanted is True else logging.INFO
        log.log(level, "trainer.cuda_graph=%s: %s; training with the eager step", wanted, why_not)
    return None


def captures(cfg: Config, device: torch.device) -> bool:
    """Whether a run of this config on `device` would capture its step (when the capture
    itself succeeds)."""
    return cfg.trainer.cuda_graph is not False and _reason_not(cfg, device) is None


def _reason_not(cfg: Config, device: torch.device) -> str | None:
    """reason_not for a run of this config in this process."""
    lazy_r1 = cfg.loss.r1_gamma > 0 and cfg.loss.r1_every > 1
    if cfg.trainer.augment != "none":
        # Its generator is not the default one: a capture would need it registered with the
        # graph (CUDAGraph.register_generator_state), which has never run on a GPU here.
        return "trainer.augment draws from a generator of its own, which is not captured"
    return reason_not(device, distributed.world_size(), lazy_r1)


def reason_not(device: torch.device, world_size: int, r1_lazy: bool = False) -> str | None:
    """Why this run cannot capture its step, or None when it can."""
    if r1_lazy:
        # Steps with and without R1 are two different graphs; one capture holds one.
        return "lazy R1 (loss.r1_every > 1) alternates two kinds of step"
    if device.type != "cuda":
        return f"the device is {device.type}, and CUDA graphs need a CUDA device"
    if world_size > 1:
        # DDP's gradient all-reduce could be captured too, but NCCL in a graph needs more care
        # (and a warm-up of its own) than this switch has been tested with.
        return f"data-parallel training over {world_size} processes is not captured"
    return None


class StaticBatches:
    """A step's real batches in fixed buffers: `fill` copies the stream's next `num` batches
    in before each step; next_batch then hands them out in order, as the stream would have.
    The streams draw from generators of their own, so drawing a step's batches together
    changes no random number."""

    def __init__(self, stream, num: int):
        self.stream, self.num = stream, num
        self.buffers: list[torch.Tensor] = []  # num of (B, data_dim), made at the first fill
        self.taken = 0

    def fill(self) -> None:
        batches = [self.stream.next_batch() for _ in range(self.num)]
        if not self.buffers:
            self.buffers = [torch.empty_like(batch) for batch in batches]
        for buffer, batch in zip(self.buffers, batches, strict=True):
            buffer.copy_(batch)
        self.taken = 0

    def next_batch(self) -> torch.Tensor:
        buffer = self.buffers[self.taken]
        self.taken += 1
        # A new tensor on the buffer's memory: R1's requires_grad_, and the gradient backward
        # leaves on it, stay with this step's tensor instead of piling up on the buffer.
        return buffer.detach()  # (B, data_dim)


class GraphStep:
    """The training step and the EMA update, captured once and replayed: `step()` runs one
    training step and returns its STAT_KEYS tensor, which the next step overwrites.

    Replaces the GAN's optimizers with capturable ones, so it must be made before any
    optimizer state exists (Run makes it before resuming). On a device other than CUDA nothing
    is captured: every step is the graph-safe step, run eagerly.
    """

    def __init__(self, cfg: Config, gan: GAN, data, settings: StepSettings, device: torch.device):
        self.gan, self.data, self.device = gan, data, device
        capturable_optimizers(gan, cfg)
        self.graph_safe_step = GANStep(gan, settings, device, graph_safe=True)
        self.eager_step = GANStep(gan, settings, device)
        self.batches = StaticBatches(data, settings.d_steps)
        # One side stream for the warm-up and the capture (make_graphed_callables does the
        # same): cuBLAS and cuDNN set up what they keep per stream before the capture.
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stats: torch.Tensor | None = None  # (6,), the graph's output
        self.num_eager = 0  # graph-safe steps run eagerly, before the capture
        self.failed = False  # the capture failed: the eager step from then on

    def step(self) -> torch.Tensor:
        if self.failed:
            return self.eager_step(self.data)
        self.batches.fill()  # this step's real batches into the buffers the graph reads
        if self.graph is not None:
            self.graph.replay()
            return self.stats
        if self.stream is None or self.num_eager < WARMUP_STEPS:
            self.num_eager += 1
            with warming_up(self.stream):
                return self.graph_safe_step(self.batches)
        return self.capture_and_replay()

    def capture_and_replay(self) -> torch.Tensor:
        try:
            self.graph, self.stats = capture(
                lambda: self.graph_safe_step(self.batches), self.stream
            )
        except RuntimeError as e:  # CUDA's errors, and torch's "not allowed while capturing"
            why = first_line(e)
        else:
            log.info(
                "Training step captured as one CUDA graph after %d eager steps", self.num_eager
            )
            self.graph.replay()  # the capture only recorded the step: this runs it
            return self.stats
        # Out of the except block, so that the failed graph is freed (and with it the RNG
        # state torch kept for its capture) before the step runs eagerly.
        log.warning(
            "CUDA graph capture of the training step failed (%s); training with the eager step",
            why,
        )
        self.fall_back()
        return self.graph_safe_step(self.batches)  # this step's batches are in the buffers

    def recapture(self) -> None:
        """After a rollback: the optimizers hold new state tensors and learning rates, which
        the graph recorded as the old ones' addresses and values. Warm up and capture anew."""
        if self.failed:
            return
        self.graph, self.stats, self.num_eager = None, None, 0

    def fall_back(self) -> None:
        """Undo what a failed capture may have left half done; no side stream from now on."""
        self.failed, self.graph, self.stats, self.stream = True, None, None, None
        self.gan.discriminator.requires_grad_(True)  # the step freezes it for G's update
        for optimizer in (self.gan.g_optimizer, self.gan.d_optimizer):
            for group in optimizer.param_groups:  # no "capturable but not captured" warning
                if group.get("capturable"):
                    group["capturable"] = False


def capturable_optimizers(gan: GAN, cfg: Config) -> None:
    """Give the GAN capturable optimizers in place of the ones GAN.build made (nothing is
    lost: they hold no state yet). One process only, so G and D are the plain modules."""
    for optimizer in (gan.g_optimizer, gan.d_optimizer):
        if optimizer.state:
            raise RuntimeError("capturable optimizers must replace the GAN's before it trains")
    gan.g_optimizer = build_optimizer(gan.generator.parameters(), cfg.optimizer.g, True)
    gan.d_optimizer = build_optimizer(gan.discriminator.parameters(), cfg.optimizer.d, True)


@contextlib.contextmanager
def warming_up(stream: torch.cuda.Stream | None) -> Iterator[None]:
    """A warm-up step before the capture, as torch's recipe has it: on the side stream, which
    first waits for the work queued before it; the current stream then waits for the step's.
    Without a stream (no CUDA), just the step."""
    with warnings.catch_warnings():
        # Adam warns when a capturable optimizer steps uncaptured: here that is the point.
        warnings.filterwarnings("ignore", "This instance was constructed with capturable=True")
        if stream is None:
            yield
            return
        current = torch.cuda.current_stream(stream.device)
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            yield
        current.wait_stream(stream)


def capture(fn: Callable[[], torch.Tensor], stream: torch.cuda.Stream):
    """A CUDA graph of fn's work on `stream`, and fn's output: the tensor each replay rewrites.
    Nothing runs during the capture: kernels are recorded, and the RNG offsets with them."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        out = fn()
    return graph, out
