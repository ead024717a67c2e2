"""The checkpoint format: the only code that builds a checkpoint's dict or reads its keys.

A checkpoint is the whole state of a run between two steps, as a dict of tensors and plain
values (torch.save; loaded with weights_only=True, so a file can never run code):

    format       FORMAT, this layout's version (files from before it have none: migrate)
    step         steps done
    gan          generator, discriminator, g_optimizer, d_optimizer, [ema], [augment]: state
                 dicts
    data         stream: the training stream's state (its generator, epoch, position);
                 epoch_size: rows in one epoch of a finite set, or None when endless
    rng          every rank's RNG states, rank 0 first (one for a single process)
    fixed_noise  the noise behind every sample picture
    stats        sum and count of the step statistics since the last log row
    watch        the watched quality: best step and value, evaluations since, rollbacks
                 (training/watch.py); absent in files from before it existed
    config       the resolved config, as plain values
    started_in   the folder the run was started in: where its relative paths start

The rest of gantool sees a Checkpoint, the typed view that `decode` makes and `encode` takes.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gantool.config.compose import defaults, flatten, to_dict
from gantool.config.schema import Config
from gantool.core.errors import GantoolError, first_line
from gantool.datasets.registry import to_config
from gantool.training.gan import shapes_of

log = logging.getLogger(__name__)

FORMAT = 2
GAN_PARTS = ("generator", "discriminator", "g_optimizer", "d_optimizer")  # and maybe "ema"
RNG_KEYS = ("python", "numpy", "torch")


@dataclass
class Checkpoint:
    """A checkpoint's contents, checked to have gantool's structure."""

    step: int
    gan: dict[str, dict]  # GAN_PARTS and maybe "ema", each a state dict
    stream: dict  # the training stream's own state
    epoch_size: int | None  # rows in an epoch of a finite set; None: endless
    rng: list[dict]  # every rank's RNG states, rank 0 first
    fixed_noise: torch.Tensor
    stats_sum: torch.Tensor
    stats_count: int
    config: dict  # the resolved config as plain values
    started_in: str | None  # None: a file from before this was recorded
    watch: dict | None = None  # Watch.state_dict(); None: a file from before it existed

    def generator_state(self) -> dict:
        """The weights to sample from: the EMA generator's when the run kept one."""
        return self.gan.get("ema", self.gan["generator"])


# --- writing -------------------------------------------------------------------------------------
def encode(ckpt: Checkpoint) -> dict:
    return {
        "format": FORMAT,
        "step": ckpt.step,
        "gan": ckpt.gan,
        "data": {"stream": ckpt.stream, "epoch_size": ckpt.epoch_size},
        "rng": ckpt.rng,
        "fixed_noise": ckpt.fixed_noise,
        "stats": {"sum": ckpt.stats_sum, "count": ckpt.stats_count},
        "config": ckpt.config,
        "started_in": ckpt.started_in,
        "watch": ckpt.watch,
    }


# --- reading -------------------------------------------------------------------------------------
def load(path: Path, device: torch.device | str = "cpu") -> Checkpoint:
    """A gantool checkpoint file, or a GantoolError saying why the file is not one.

    Loaded with weights_only=True: tensors and plain containers only, never arbitrary code. A
    file that needs more (a crafted pickle, another program's objects) is refused unloaded;
    so is one that loads but lacks gantool's structure (a bare tensor, another program's
    dict, a damaged checkpoint)."""
    if not path.is_file():
        raise GantoolError(f"cannot load checkpoint {path}: not a regular file")
    try:
        with warnings.catch_warnings():  # torch warns of a pickle protocol it then refuses
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():  # not a pickle at all
            raise GantoolError(f"cannot load checkpoint {path}: {_reason(e)}") from e
        raise GantoolError(
            f"{path} is not a gantool checkpoint: it holds Python objects other than tensors "
            "and plain containers, and was not loaded (unpickling them could run code)"
        ) from None
    except Exception as e:  # truncated zip files, empty files, text, ...
        raise GantoolError(f"cannot load checkpoint {path}: {_reason(e)}") from e
    return decode(state, path)


def decode(state: Any, path: Path) -> Checkpoint:
    """The Checkpoint in a loaded file's dict, after migrating an older layout; a dict that
    lacks gantool's structure is a GantoolError naming what is wrong."""
    if not isinstance(state, dict):
        raise GantoolError(
            f"{path} is not a gantool checkpoint: it holds a {type(state).__name__}, not a dict"
        )
    state = migrate(state, path)
    try:
        data, stats = _typed(state, "data", dict), _typed(state, "stats", dict)
        ckpt = Checkpoint(
            step=_typed(state, "step", int),
            gan=_typed(state, "gan", dict),
            stream=_typed(data, "stream", dict, "data."),
            epoch_size=_typed(data, "epoch_size", int, "data.", optional=True),
            rng=_typed(state, "rng", list),
            fixed_noise=_typed(state, "fixed_noise", torch.Tensor),
            stats_sum=_typed(stats, "sum", torch.Tensor, "stats."),
            stats_count=_typed(stats, "count", int, "stats."),
            config=_typed(state, "config", dict),
            started_in=_typed(state, "started_in", str, optional=True),
            watch=_typed(state, "watch", dict, optional=True),
        )
    except _Unlike as e:
        raise GantoolError(f"{path} is not a gantool checkpoint: {e}") from None
    problem = _structure_problem(ckpt) or _shape_problem(ckpt)
    if problem:
        raise GantoolError(f"{path} is damaged: {problem}")
    return ckpt


def migrate(state: dict, path: Path) -> dict:
    """An older checkpoint's dict in today's layout. Files without "format" (gantool 0.1)
    kept the stream's state as "data", this process's RNG as "rng" (and every rank's as
    "rng_by_rank" under torchrun); their epoch size is the length of the stream's order."""
    version = state.get("format", 1)
    if version == FORMAT:
        return state
    if version != 1:
        raise GantoolError(
            f"{path} has checkpoint format {version!r}; this gantool reads up to {FORMAT}"
        )
    missing = [k for k in ("step", "gan", "data", "rng", "config") if k not in state]
    if missing:
        raise GantoolError(f"{path} is not a gantool checkpoint: it lacks {', '.join(missing)}")
    stream = state["data"]
    order = stream.get("order") if isinstance(stream, dict) else None
    return {
        **state,
        "format": FORMAT,
        "data": {
            "stream": stream,
            "epoch_size": len(order) if isinstance(order, torch.Tensor) else None,
        },
        "rng": state.get("rng_by_rank", [state["rng"]]),
        "started_in": state.get("started_in"),
    }


class _Unlike(Exception):
    """What makes a dict unlike a checkpoint's, in words."""


def _typed(state: dict, key: str, kind: type, prefix: str = "", optional: bool = False):
    """state[key], checked to be a `kind` (or None or absent, where optional)."""
    if key not in state and not optional:
        raise _Unlike(f"it lacks {prefix}{key}")
    value = state.get(key)
    if (value is None and optional) or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    article = "an" if kind.__name__[0] in "aeiou" else "a"
    raise _Unlike(f"its {prefix}{key} is not {article} {kind.__name__}")


def _structure_problem(ckpt: Checkpoint) -> str | None:
    """What is wrong with a checkpoint's nested parts, or None."""
    for name in GAN_PARTS:
        if not isinstance(ckpt.gan.get(name), dict):
            return f"its gan.{name} is missing"
    augment = ckpt.gan.get("augment")  # trainer.augment's generator state
    if augment is not None:
        state = augment.get("_extra_state") if isinstance(augment, dict) else None
        if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.ndim == 1):
            return "its gan.augment is not an augmentation's generator state"
    if not ckpt.rng:
        return "its RNG states are missing"
    for i, rank in enumerate(ckpt.rng):
        if not isinstance(rank, dict) or not all(k in rank for k in RNG_KEYS):
            return f"the RNG state of rank {i} lacks one of {', '.join(RNG_KEYS)}"
    return None


def _shape_problem(ckpt: Checkpoint) -> str | None:
    """What in the GAN's state does not fit the networks its own config builds, or None: every
    tensor is checked before any is loaded into a module."""
    try:
        cfg = to_config(ckpt.config)
    except GantoolError as e:
        return f"its config is not one this gantool reads ({e})"
    generator, discriminator = shapes_of(cfg)
    nets = {"generator": generator, "discriminator": discriminator, "ema": generator}
    for name, net in nets.items():
        if name in ckpt.gan:
            problem = _module_problem(ckpt.gan[name], net.state_dict())
            if problem:
                return f"its gan.{name} {problem}"
    for name, net in (("g_optimizer", "generator"), ("d_optimizer", "discriminator")):
        problem = _optimizer_problem(ckpt.gan[name], list(nets[net].parameters()))
        if problem:
            return f"its gan.{name} {problem}"
    return None


def _module_problem(saved: dict, expected: dict) -> str | None:
    if saved.keys() != expected.keys():
        differ = sorted(saved.keys() ^ expected.keys())
        return f"has other tensors than its config's network ({', '.join(differ[:3])})"
    for key, want in expected.items():
        got = saved[key]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return f"holds {key} of shape {shape}; its config makes {tuple(want.shape)}"
    return None


def _optimizer_problem(saved: dict, params: list[torch.Tensor]) -> str | None:
    groups, state = saved.get("param_groups"), saved.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict):
        return "is not an optimizer's state"
    try:
        indices = [i for group in groups for i in group["params"]]
    except (KeyError, TypeError):
        return "is not an optimizer's state"
    if len(indices) != len(params):
        return f"holds {len(indices)} parameters; its config's network has {len(params)}"
    for index, param in zip(indices, params, strict=True):
        for key, value in (state.get(index) or {}).items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != param.shape:
                return f"holds {key} of shape {tuple(value.shape)} for a {tuple(param.shape)}"
    return None


def _reason(error: Exception) -> str:
    """Why torch.load failed, in one short clause (torch's advice left out)."""
    sentence = first_line(error).split(". ")[0].rstrip(".")
    if "weights_only" in sentence or sentence == type(error).__name__:
        return f"damaged or not a checkpoint file ({type(error).__name__})"
    return f"damaged or not a checkpoint file ({type(error).__name__}: {sentence})"


# --- what may change on resume --------------------------------------------------------------
# Dataset settings that say where the files are, not what is learned. (A vectors file that
# moved may be named anew: its recorded digest must still match.)
RESUME_MAY_CHANGE = {"dataset.root", "dataset.download", "dataset.path"}


def check_resumable(ckpt: Checkpoint, cfg: Config, path: Path) -> None:
    """Refuse to resume when a setting that shapes the model, the data or the optimizer state
    has changed between the checkpoint's config and `cfg`.

    Lengths, intervals, learning rates and the like may change; they only steer what follows.
    A different optimizer (adam -> sgd) could not take over the saved optimizer state.
    """
    before, after = flatten(ckpt.config), flatten(to_dict(cfg))
    # A key gantool gained after the checkpoint was written held its default then.
    for key, value in flatten(defaults()).items():
        if key in after and key not in before:
            before[key] = value
    keys = sorted(
        k
        for k in before.keys() | after.keys()
        if (k.startswith(("model.", "dataset.")) or k in ("optimizer.g.name", "optimizer.d.name"))
        and k not in RESUME_MAY_CHANGE
        and before.get(k) != after.get(k)
    )
    if keys:
        changes = ", ".join(f"{k} ({before.get(k)} -> {after.get(k)})" for k in keys)
        raise GantoolError(f"cannot resume from {path}: these settings differ: {changes}")
