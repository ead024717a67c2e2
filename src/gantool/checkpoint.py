"""Checkpoint files: atomic save, safe load, keep the newest K, find the latest.

A run's checkpoints are ``RUN_DIR/checkpoints/step_NNNNNNN.pt``; ``last.pt`` is a hard link to
the newest. Files are written to a temporary name and moved into place with os.replace, so a
crash never leaves a half-written file under a checkpoint's name.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path

import torch

from gantool.config import Config, defaults, to_dict
from gantool.errors import GantoolError, first_line
from gantool.outputs import atomic_write
from gantool.run_folder import RunFolder

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^step_(\d+)\.pt$")
LAST = "last.pt"
# Less free space than this after a failed write: the disk is full (a checkpoint is larger).
DISK_FULL_MARGIN = 1 << 20


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save_checkpoint(state: dict, run_dir: Path, step: int, keep: int) -> Path:
    """Write `state` as the checkpoint of `step`, point last.pt at it, keep the newest `keep`."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:07d}.pt"
    _atomic(path, lambda tmp: torch.save(state, tmp))
    _atomic(folder / LAST, lambda tmp: _link_or_copy(path, tmp))
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's step checkpoints, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CHECKPOINT.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or the latest checkpoint of a run folder."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise GantoolError(f"no checkpoint in {checkpoint_dir(path)}")
        return latest
    raise GantoolError(f"{path}: no such checkpoint file or run folder")


# What trainer.checkpoint() writes (and sample, eval and resume read): a file without these
# keys is not a gantool checkpoint. Newer checkpoints may hold more, such as "started_in".
CHECKPOINT_KEYS = ("step", "gan", "data", "rng", "fixed_noise", "stats", "config")


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A gantool checkpoint's state, or a GantoolError saying why the file is not one.

    Loaded with weights_only=True: tensors and plain containers only, never arbitrary code. A
    file that needs more (a crafted pickle, another program's objects) is refused unloaded;
    so is one that loads but lacks gantool's keys (a bare tensor, another program's dict).
    """
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
    if not isinstance(state, dict):
        raise GantoolError(
            f"{path} is not a gantool checkpoint: it holds a {type(state).__name__}, not the "
            f"dict of {', '.join(CHECKPOINT_KEYS)}"
        )
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise GantoolError(f"{path} is not a gantool checkpoint: it lacks {', '.join(missing)}")
    gan, config = state["gan"], state["config"]
    if not (
        isinstance(state["step"], int)
        and isinstance(config, dict)
        and isinstance(gan, dict)
        and isinstance(gan.get("generator"), dict)
    ):
        raise GantoolError(
            f"{path} is not a gantool checkpoint: its step, config or gan.generator is not "
            "what gantool writes"
        )
    return state


def _reason(error: Exception) -> str:
    """Why torch.load failed, in one short clause (torch's advice left out)."""
    sentence = first_line(error).split(". ")[0].rstrip(".")
    if "weights_only" in sentence or sentence == type(error).__name__:
        return f"damaged or not a checkpoint file ({type(error).__name__})"
    return f"damaged or not a checkpoint file ({type(error).__name__}: {sentence})"


Broken = list[tuple[Path, GantoolError]]  # checkpoint files that did not load, and why


def newest_loadable(run_dir: Path) -> tuple[Path, dict, Broken] | None:
    """The newest checkpoint of a run that loads, with the newer files that did not (newest
    first), or None if the run has no checkpoint. Reads only; a run whose every checkpoint
    fails to load is a GantoolError."""
    found = list_checkpoints(run_dir)
    broken: Broken = []
    for path in reversed(found):
        try:
            return path, load_checkpoint(path), broken
        except GantoolError as e:
            broken.append((path, e))
    if found:
        raise GantoolError(f"no loadable checkpoint in {checkpoint_dir(run_dir)}")
    return None


def remove_temporaries(run_dir: Path) -> None:
    """Delete temporary files left by a process killed while writing a checkpoint."""
    folder = checkpoint_dir(run_dir)
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink()


def _atomic(path: Path, write) -> None:
    try:
        atomic_write(path, write)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError
        if _disk_full(e, path.parent):
            raise GantoolError(f"cannot write {path}: the disk is full") from e
        raise GantoolError(f"cannot write {path}: {first_line(e)}") from e


def _disk_full(error: Exception, folder: Path) -> bool:
    """torch.save says "[enforce fail at inline_container.cc] unexpected pos" when the disk
    fills: look at the disk itself rather than the wording."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    try:
        return shutil.disk_usage(folder).free < DISK_FULL_MARGIN
    except OSError:
        return False


def _link_or_copy(src: Path, dst: str) -> None:
    os.unlink(dst)
    try:
        os.link(src, dst)
    except OSError:  # file systems without hard links
        shutil.copyfile(src, dst)


# Dataset settings that say where the files are, not what is learned. (A vectors file that
# moved may be named anew: its recorded digest must still match.)
RESUME_MAY_CHANGE = {"dataset.root", "dataset.download", "dataset.path"}


def check_resumable(saved: dict, now: dict, path: Path) -> None:
    """Refuse to resume when a setting that shapes the model, the data or the optimizer state
    has changed (`saved`: the checkpoint's config; `now`: the new one, both as plain dicts).

    Lengths, intervals, learning rates and the like may change; they only steer what follows.
    A different optimizer (adam -> sgd) could not take over the saved optimizer state.
    """
    before, after = flatten(saved), flatten(now)
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


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config dict as {"a.b.c": value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class Checkpointer:
    """A run's checkpoints, for the trainer: the newest that loads (checked to be the same
    model), saving with keep-K, and the files that did not load set aside.

    Only the process that `writes` (rank 0) touches files; the others get None from save.
    """

    def __init__(self, folder: RunFolder, keep: int, writes: bool = True):
        self.run_dir = folder.path
        self.keep = keep
        self.writes = writes
        self.broken: Broken = []

    def latest(self) -> Path | None:
        return latest_checkpoint(self.run_dir)

    def newest(self, cfg: Config) -> tuple[Path, dict] | None:
        """The newest checkpoint that loads and that `cfg` may resume, or None if there is
        none at all. Reads only: the files that did not load are remembered for
        set_aside_broken, which runs once every check has passed."""
        found = newest_loadable(self.run_dir)
        if found is None:
            return None
        path, state, self.broken = found
        check_resumable(state["config"], to_dict(cfg), path)
        return path, state

    def set_aside_broken(self) -> None:
        """Rename the newer files that did not load to *.pt.corrupt, kept for inspection but
        never picked again, and clear leftover temporary files of a killed save."""
        for path, error in self.broken:
            log.warning("%s; falling back to the previous checkpoint", error)
            path.rename(path.with_name(path.name + ".corrupt"))
        self.broken = []
        remove_temporaries(self.run_dir)

    def save(self, step: int, state: dict) -> Path | None:
        if not self.writes:
            return None
        return save_checkpoint(state, self.run_dir, step, self.keep)
