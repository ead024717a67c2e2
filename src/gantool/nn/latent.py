"""Latents for pictures of a trained generator: truncated noise and paths between latents.

Truncation (BigGAN's trick, Brock et al. 2019): every noise coordinate outside ±T is drawn
again until all are inside, which trades variety for typical samples. Paths: a latent walk
moves each sample's noise from one random latent to another in K steps, on a great circle for
normal noise (slerp: a straight line would pass near the origin, where N(0, I) noise in many
dimensions never lies) and on a straight line for uniform noise (the cube [0, 1)^D holds the
whole line). A conditional model's class column is held fixed along its path.

All noise comes from the caller's generator: no global RNG moves, and one seed gives one draw.
"""

from __future__ import annotations

import math

import torch

from gantool.config.schema import ModelConfig
from gantool.core.errors import GantoolError
from gantool.nn.mlp import sample_latent, split_classes, with_classes

# Rounds of redraws before a truncated draw gives up. Each round draws about 1.25 / q
# candidates for each value still outside (q = P(|x| <= T), the chance one lands inside), at
# most DRAW_LIMIT numbers a round, and fills the outside values in order with the candidates
# that landed inside: one or two rounds usually finish. Where DRAW_LIMIT binds (T = 0.01
# over millions of values) each value gets at least one candidate a round and is left with
# probability 1 - q per round: 0.992^10000 is e^-80.
MAX_REDRAWS = 10_000
DRAW_LIMIT = 1 << 22
# Below this angle (radians) between two latents, slerp's sin(omega) divides by almost zero:
# the path is a straight line there, which is the same path to within float precision.
PARALLEL_ANGLE = 1e-4


def truncate(noise: torch.Tensor, threshold: float, generator: torch.Generator) -> torch.Tensor:
    """N(0, 1) noise (any shape) with every coordinate outside ±threshold redrawn from
    `generator` until all are inside, in place; returns it: N(0, 1) truncated to ±threshold,
    the same for the same generator state. Vectorised: each round is one draw of candidates
    for all the values still outside (see MAX_REDRAWS)."""
    inside_chance = math.erf(threshold / math.sqrt(2))  # q = P(|x| <= T) for x ~ N(0, 1)
    # (M,) indices of each dimension still to redraw: tuples index a view (a conditional
    # model's noise columns) in place, where a flattened view would need contiguous memory.
    outside = (noise.abs() > threshold).nonzero(as_tuple=True)
    for _ in range(MAX_REDRAWS):
        remaining = outside[0].numel()
        if remaining == 0:
            return noise
        per_value = max(1, min(math.ceil(1.25 / inside_chance), DRAW_LIMIT // remaining))
        fresh = torch.randn(
            remaining * per_value, device=noise.device, dtype=noise.dtype, generator=generator
        )
        accepted = fresh[fresh.abs() <= threshold][:remaining]  # the first that landed inside
        filled = accepted.numel()
        noise[tuple(index[:filled] for index in outside)] = accepted
        outside = tuple(index[filled:] for index in outside)
    if outside[0].numel():
        raise GantoolError(
            f"--truncation {threshold:g}: {outside[0].numel():,} noise values still outside "
            f"±{threshold:g} after {MAX_REDRAWS:,} redraws; choose a larger T"
        )
    return noise


def draw_latent(
    num: int,
    cfg: ModelConfig,
    device: torch.device,
    generator: torch.Generator,
    classes: torch.Tensor | None = None,
    truncation: float | None = None,
) -> torch.Tensor:
    """G's input (num, latent_dim[+1]) as sample_latent draws it, then, with `truncation`,
    every noise coordinate redrawn into ±truncation (normal noise only). Without truncation
    it is sample_latent's draw itself, so the same seed gives the same samples as before."""
    z = sample_latent(num, cfg, device, generator, classes)
    if truncation is not None:
        if cfg.noise != "normal":
            raise GantoolError("truncation needs normal noise")  # the caller refuses first
        truncate(z[:, : cfg.latent_dim], truncation, generator)  # a view: z changes with it
    return z


def lerp(start: torch.Tensor, end: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points on the straight lines from start (N, D) to end (N, D) at fractions t (K,):
    (N, K, D)."""
    t = t.to(start.dtype)[None, :, None]  # (1, K, 1)
    return start[:, None] + t * (end - start)[:, None]


def slerp(start: torch.Tensor, end: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points from start (N, D) to end (N, D) at fractions t (K,): (N, K, D). The direction
    turns along the great circle between the two (spherical interpolation) while the length
    goes linearly from |start| to |end|, so every point's norm lies between the ends' and a
    Gaussian walk never passes through the low-norm middle that a straight line crosses.
    Nearly parallel pairs move on the straight line."""
    t = t.to(start.dtype)[None, :, None]  # (1, K, 1)
    start_norm = start.norm(dim=1, keepdim=True)  # (N, 1)
    end_norm = end.norm(dim=1, keepdim=True)
    a = start / start_norm.clamp_min(1e-12)  # unit directions (N, D)
    b = end / end_norm.clamp_min(1e-12)
    omega = (a * b).sum(dim=1).clamp(-1, 1).acos()[:, None, None]  # (N, 1, 1) angle apart
    sin = omega.sin()
    parallel = sin < PARALLEL_ANGLE
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, 1 - t, ((1 - t) * omega).sin() / safe)  # (N, K, 1)
    wb = torch.where(parallel, t, (t * omega).sin() / safe)
    direction = wa * a[:, None] + wb * b[:, None]  # (N, K, D), unit length off the parallel case
    direction = direction / direction.norm(dim=2, keepdim=True).clamp_min(1e-12)
    length = start_norm[:, None] + t * (end_norm - start_norm)[:, None]  # (N, K, 1)
    return direction * length


def walk(start: torch.Tensor, end: torch.Tensor, num_points: int, cfg: ModelConfig) -> torch.Tensor:
    """G's inputs on num_points ≥ 2 evenly spaced points from start (N, latent_dim[+1]) to end
    (the same shape): (N, num_points, ...). slerp for normal noise, lerp for uniform; a
    conditional model's class column is start's all along. The first and last points are
    start and end themselves, bit for bit, so a walk's ends are plain samples."""
    classes = None
    if cfg.conditional:
        start, classes = split_classes(start)
        end, _ = split_classes(end)
    t = torch.linspace(0, 1, num_points, device=start.device)
    path = (slerp if cfg.noise == "normal" else lerp)(start, end, t)  # (N, K, D)
    path[:, 0], path[:, -1] = start, end  # exact ends, not a rounding of them
    if classes is None:
        return path
    num, points, dim = path.shape
    flat = with_classes(path.reshape(num * points, dim), classes.repeat_interleave(points))
    return flat.reshape(num, points, dim + 1)
