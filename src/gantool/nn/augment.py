"""Differentiable augmentation (DiffAugment: Zhao et al. 2020, "Differentiable Augmentation for
Data-Efficient GAN Training"): D sees real and fake images through the same random colour,
translation and cutout, and G's gradient flows back through them, so D cannot memorise a
small data set and G is not taught to produce augmented-looking images.

The ranges are those of the paper's official code (mit-han-lab/data-efficient-gans,
DiffAugment_pytorch.py), one draw per image:

- color: brightness x + U(-0.5, 0.5); saturation (x - channel mean) * U(0, 2) + channel mean
  (the identity on 1-channel images); contrast (x - image mean) * U(0.5, 1.5) + image mean,
  where the channel mean is per pixel over C and the image mean over (C, H, W).
- translation: content moves by whole pixels, dy in [-s, s] and dx likewise, with
  s = round(size / 8) rounded half up (28 -> 4, 32 -> 4, 64 -> 8); what enters is zero.
- cutout: a square of side round(size / 2) (28 -> 14, 32 -> 16, 64 -> 32) is zeroed; its
  centre is uniform over [0, size] (even side) or [0, size - 1] (odd side), so near a border
  the square is clipped to the image, as in the official code.

Zero is the fill value of both, as in the official code; for images in [-1, 1] it is mid-grey.

Graph-safe: every shape depends only on x's shape, and there is no .item(), no host sync and
no Python loop over images, so a training step that calls augment() can be captured in a CUDA
graph. A generator other than the device's default also needs, for that (from torch's docs and
its Note [CUDA Graph-safe RNG states]; none of it is done or tested here, on a machine with no
GPU):
- to exist before capture: DiffAugment creates its generator at its first forward (host
  work), so run the eager warm-up steps first, as any capture does;
- to be registered with the graph before capture, `graph.register_generator_state(generator)`
  (torch.cuda.CUDAGraph): capture then records the generator's total Philox offset increment,
  and each replay first copies the generator's current seed and offset into the graph and then
  advances the offset by that total, so each replay draws fresh numbers and
  `generator.get_state()` between replays is the state to checkpoint. Without registration
  torch refuses a non-default generator during capture.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn

POLICIES = ("color", "translation", "cutout")


def check_policy(policy: Sequence[str]) -> tuple[str, ...]:
    """The policy as a tuple, or a one-line ValueError naming the valid names."""
    if isinstance(policy, str):  # "color,cutout" would otherwise be read letter by letter
        raise ValueError(
            f"augmentation policy must be a list of names from {', '.join(POLICIES)}, "
            f"not the string {policy!r}"
        )
    unknown = [name for name in policy if name not in POLICIES]
    if unknown:
        raise ValueError(
            f"unknown augmentation policy {unknown[0]!r}: valid ones are {', '.join(POLICIES)}"
        )
    return tuple(policy)


def augment(x: torch.Tensor, policy: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """x: (N, C, H, W) float images in [-1, 1] -> an augmented copy of the same shape,
    differentiable w.r.t. x, applying the policy's augmentations in its order (an empty
    policy returns x itself). Every random number comes from `generator`, which must be on
    x.device; none from torch's global RNG."""
    if x.ndim != 4:
        raise ValueError(f"augment takes images (N, C, H, W), got shape {tuple(x.shape)}")
    for name in check_policy(policy):
        x = _AUGMENTATIONS[name](x, generator)
    return x


def _per_image(x: torch.Tensor, generator: torch.Generator, num: int = 1) -> torch.Tensor:
    """(num, N, 1, 1, 1) draws from U(0, 1), one per image and purpose, in x's dtype."""
    shape = (num, x.shape[0], 1, 1, 1)
    return torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)


def _color(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Brightness b, then saturation s, then contrast k, as the official code applies them,
    written as the one affine map per image they make together (two full-size operations
    instead of eight: this was the costliest policy):

        x1 = x + b                          grey1 = grey + b  (grey: the mean over channels)
        x2 = (x1 - grey1) * s + grey1     = (x - grey) * s + grey + b; mean(x2) = mean(x) + b
        x3 = (x2 - mean(x2)) * k + mean(x2)
           = x * (k s) + grey * (k (1 - s)) + mean(x) * (1 - k) + b
    """
    brightness, saturation, contrast = _per_image(x, generator, 3)  # each (N, 1, 1, 1)
    b, s, k = brightness - 0.5, saturation * 2, contrast + 0.5
    grey = x.mean(dim=1, keepdim=True)  # (N, 1, H, W)
    mean = grey.mean(dim=(2, 3), keepdim=True)  # (N, 1, 1, 1): over (C, H, W)
    return x * (k * s) + (grey * (k * (1 - s)) + (mean * (1 - k) + b))


def _translation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image's content moves by its own (dy, dx) whole pixels; what enters is zero."""
    n, c, h, w = x.shape
    # round(size / 8), half up, as the official int(size * 0.125 + 0.5)
    max_dy, max_dx = (h + 4) // 8, (w + 4) // 8
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1), generator=generator, device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1), generator=generator, device=x.device)
    rows = torch.arange(h, device=x.device) - dy  # (N, H): the source row of each output row
    cols = torch.arange(w, device=x.device) - dx  # (N, W)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    # (N, H, W) flat source index; clamped rows and columns are read, then masked to zero
    source = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
    moved = x.flatten(2).gather(2, source.view(n, 1, h * w).expand(n, c, h * w))
    # a multiply, not torch.where: the same zeros for finite images, at half where's cost
    return moved.view(n, c, h, w) * inside[:, None].to(x.dtype)


def _cutout(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image loses a square of half its size at its own random place (clipped to the
    image near a border)."""
    n, _, h, w = x.shape
    side_h, side_w = (h + 1) // 2, (w + 1) // 2  # round(size / 2), half up, as the official
    # centre in [0, size] for an even side, [0, size - 1] for an odd one (the official range)
    centre_y = torch.randint(0, h + 1 - side_h % 2, (n, 1), generator=generator, device=x.device)
    centre_x = torch.randint(0, w + 1 - side_w % 2, (n, 1), generator=generator, device=x.device)
    rows = torch.arange(h, device=x.device) - (centre_y - side_h // 2)  # (N, H): row in square
    cols = torch.arange(w, device=x.device) - (centre_x - side_w // 2)  # (N, W)
    hole = ((rows >= 0) & (rows < side_h))[:, :, None] & ((cols >= 0) & (cols < side_w))[:, None, :]
    return x * (~hole[:, None]).to(x.dtype)  # (N, 1, H, W): the same hole in every channel


_AUGMENTATIONS = {"color": _color, "translation": _translation, "cutout": _cutout}


class DiffAugment(nn.Module):
    """Flat rows (N, C*H*W) -> the same rows augmented, while training (self.training); in eval
    mode the identity. It holds its own torch.Generator, seeded by `seed` and created at the
    first forward on the input's device, so building it on the meta device (to size
    networks) draws nothing and creates no generator.

    Its state_dict carries the generator's state (get_extra_state: a CPU uint8 tensor, as
    torch.Generator.get_state returns it, whatever the generator's device), so a resumed run
    continues the same augmentations exactly. A state loaded before the first forward is kept
    and applied when the generator is created.

    Across devices: torch's CPU generator (Mersenne Twister, a 5056-byte state) and CUDA
    generator (Philox, a 16-byte seed and offset) have states of different forms, and no state
    of one makes the other draw the same numbers. A state of the other form (saved on CPU,
    continued on CUDA, or the reverse) therefore seeds the new generator with a number derived
    from the state's bytes (SHA-256): the run continues deterministically (the same checkpoint
    gives the same augmentations), but not with the numbers the old device would have drawn.
    Only the CPU side of this is tested here.

    The checkpoint's `_extra_state` tensor has the length of its device's form (5056 on CPU,
    16 on CUDA); a never-run module reports the CPU form of its seed.
    """

    def __init__(self, policy: Sequence[str], shape: tuple[int, int, int], seed: int = 0):
        super().__init__()
        if len(shape) != 3 or any(int(size) < 1 for size in shape):
            raise ValueError(f"DiffAugment shape must be (C, H, W) of positive sizes, got {shape}")
        self.policy = check_policy(policy)
        self.shape = tuple(int(size) for size in shape)
        self.seed = seed
        self._generator: torch.Generator | None = None  # created at the first forward
        self._pending: torch.Tensor | None = None  # a state loaded before that

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.policy:
            return x
        c, h, w = self.shape
        if x.ndim != 2 or x.shape[1] != c * h * w:
            raise ValueError(
                f"DiffAugment of {c}x{h}x{w} images takes rows (N, {c * h * w}), "
                f"got a tensor of shape {tuple(x.shape)}"
            )
        if x.is_meta:  # shapes only: there is nothing to draw or augment
            return x
        images = x.reshape(-1, c, h, w)  # a view of contiguous rows
        return augment(images, self.policy, self._generator_on(x.device)).flatten(1)

    def _generator_on(self, device: torch.device) -> torch.Generator:
        """The generator on `device`, created on first use (host work, before any capture);
        a move to another device carries the state over."""
        generator = self._generator
        if generator is not None and generator.device == device:
            return generator
        state = generator.get_state() if generator is not None else self._pending
        generator = torch.Generator(device)
        if state is None:
            generator.manual_seed(self.seed)
        else:
            _restore(generator, state)
        self._generator, self._pending = generator, None
        return generator

    def get_extra_state(self) -> torch.Tensor:
        if self._generator is not None:
            return self._generator.get_state()  # a CPU uint8 tensor on every device
        if self._pending is not None:
            return self._pending.clone()
        # never run: the state its CPU generator starts from (a temporary CPU generator, so
        # this works on a module built on the meta device and leaves the global RNG alone)
        return torch.Generator("cpu").manual_seed(self.seed).get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.ndim != 1:
            raise ValueError("DiffAugment's extra state must be a generator state (a uint8 vector)")
        state = state.detach().to("cpu", copy=True)  # set_state takes CPU bytes
        if self._generator is None:
            self._pending = state
        else:
            _restore(self._generator, state)

    def extra_repr(self) -> str:
        return f"policy={self.policy}, shape={self.shape}, seed={self.seed}"


def _restore(generator: torch.Generator, state: torch.Tensor) -> None:
    """Set a state of the generator's own form exactly; seed from one of another device's form
    (see DiffAugment: no exact mapping exists between the two algorithms)."""
    if state.numel() == generator.get_state().numel():
        generator.set_state(state)
    else:
        digest = hashlib.sha256(state.numpy().tobytes()).digest()
        generator.manual_seed(int.from_bytes(digest[:8], "little"))
