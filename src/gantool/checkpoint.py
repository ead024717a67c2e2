"""Checkpoint files: atomic save, safe load, keep the newest K, find the latest.

A run's checkpoints are ``RUN_DIR/checkpoints/step_NNNNNNN.pt``; ``last.pt`` is a hard link to
the newest. Files are written to a temporary name and moved into place with os.replace, so a
crash never leaves a half-written file under a checkpoint's name.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from gantool.errors import GantoolError, first_line

log = logging.getLogger(__name__)

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
        raise GantoolError(f"cannot load checkpoint {path}: {first_line(e)}") from e


def load_latest(run_dir: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads, or None if the run has none.

    A newer one that fails to load (truncated, corrupt) is renamed to ``*.pt.corrupt`` with a
    warning, so it is kept for inspection but never picked again.
    """
    found = list_checkpoints(run_dir)
    for path in reversed(found):
        try:
            return path, load_checkpoint(path)
        except GantoolError as e:
            log.warning("%s; falling back to the previous checkpoint", e)
            path.rename(path.with_name(path.name + ".corrupt"))
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError
        raise GantoolError(f"cannot write {path}: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _link_or_copy(src: Path, dst: str) -> None:
    os.unlink(dst)
    try:
        os.link(src, dst)
    except OSError:  # file systems without hard links
        shutil.copyfile(src, dst)
