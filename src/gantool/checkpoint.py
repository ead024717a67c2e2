"""Checkpoint files: atomic save, safe load, keep the newest K, find the latest.

A run's checkpoints are ``RUN_DIR/checkpoints/step_NNNNNNN.pt``; ``last.pt`` is a hard link to
the newest. Files are written to a temporary name and moved into place with os.replace, so a
crash never leaves a half-written file under a checkpoint's name.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from gantool.errors import GantoolError

CHECKPOINT = re.compile(r"^step_(\d+)\.pt$")
LAST = "last.pt"


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


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """Load with weights_only=True: tensors and plain containers only, never arbitrary code."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # pickle errors, truncated zip files, refused globals, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GantoolError(f"cannot load checkpoint {path}: {reason}") from e


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _link_or_copy(src: Path, dst: str) -> None:
    os.unlink(dst)
    try:
        os.link(src, dst)
    except OSError:  # file systems without hard links
        shutil.copyfile(src, dst)
