"""A run's checkpoint files: atomic save, keep the newest K, find the newest that loads.

A run's checkpoints are ``RUN_DIR/checkpoints/step_NNNNNNN.pt``; ``last.pt`` is a hard link to
the newest, and ``best.pt`` one to the checkpoint at the best periodic evaluation (watch.py),
which keep-K never removes. Files are written to a temporary name and moved into place with
os.replace, so a crash never leaves a half-written file under a checkpoint's name. What a file
holds is the codec's (codec.py); every reader of checkpoints goes through here or through
codec.load.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from pathlib import Path

import torch

from gantool.config.schema import Config
from gantool.core.errors import GantoolError, first_line
from gantool.core.files import atomic_write
from gantool.training import codec
from gantool.training.codec import Checkpoint
from gantool.training.run_folder import RunFolder

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^step_(\d+)\.pt$")
LAST = "last.pt"
# Less free space than this after a failed write: the disk is full (a checkpoint is larger).
DISK_FULL_MARGIN = 1 << 20

Broken = list[tuple[Path, GantoolError]]  # checkpoint files that did not load, and why


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The step checkpoints of the run in run_dir, oldest first."""
    folder = RunFolder(run_dir).checkpoints
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CHECKPOINT.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def newest_loadable(run_dir: Path) -> tuple[Path, Checkpoint, Broken] | None:
    """The newest checkpoint of the run in run_dir that loads, with the newer files that did
    not (newest first), or None if the run has no checkpoint. Reads only; a run whose every
    checkpoint fails to load is a GantoolError."""
    found = list_checkpoints(run_dir)
    broken: Broken = []
    for path in reversed(found):
        try:
            return path, codec.load(path), broken
        except GantoolError as e:
            broken.append((path, e))
    if found:
        raise GantoolError(f"no loadable checkpoint in {RunFolder(run_dir).checkpoints}")
    return None


def resolve(path: str | Path) -> tuple[Path, Checkpoint]:
    """A checkpoint file as given, or a run folder's newest checkpoint that loads (a damaged
    newer one is skipped with a warning; nothing is renamed)."""
    path = Path(path)
    if path.is_dir():
        found = newest_loadable(path)
        if found is None:
            raise GantoolError(f"no checkpoint in {RunFolder(path).checkpoints}")
        ckpt_path, ckpt, broken = found
        if broken:  # say why the newest was passed over
            log.warning("warning: %s; using %s", broken[0][1], ckpt_path.name)
        return ckpt_path, ckpt
    if path.exists():
        return path, codec.load(path)
    raise GantoolError(f"{path}: no such checkpoint file or run folder")


def run_of(checkpoint: Path) -> RunFolder | None:
    """The run folder a checkpoint file belongs to (RUN_DIR/checkpoints/FILE), or None."""
    folder = Path(os.path.abspath(checkpoint)).parent
    run = RunFolder(folder.parent)
    return run if run.checkpoints == folder else None


class Checkpointer:
    """A run's checkpoints, for the trainer: the newest that loads (checked to be the same
    model), saving with keep-K, and the files that did not load set aside.

    Only the process that `writes` (rank 0) touches files; the others get None from save.
    """

    def __init__(self, folder: RunFolder, keep: int, writes: bool = True):
        self.folder = folder
        self.keep = keep
        self.writes = writes
        self.broken: Broken = []

    def latest(self) -> Path | None:
        return latest_checkpoint(self.folder.path)

    def newest(self, cfg: Config) -> tuple[Path, Checkpoint] | None:
        """The newest checkpoint that loads and that `cfg` may resume, or None if there is
        none at all. Reads only: the files that did not load are remembered for
        set_aside_broken, which runs once every check has passed."""
        found = newest_loadable(self.folder.path)
        if found is None:
            return None
        path, ckpt, self.broken = found
        codec.check_resumable(ckpt, cfg, path)
        return path, ckpt

    def set_aside_broken(self) -> None:
        """Rename the newer files that did not load to *.pt.corrupt, kept for inspection but
        never picked again, and clear leftover temporary files of a killed save."""
        for path, error in self.broken:
            log.warning("%s; falling back to the previous checkpoint", error)
            path.rename(path.with_name(path.name + ".corrupt"))
        self.broken = []
        if self.folder.checkpoints.is_dir():
            for tmp in self.folder.checkpoints.glob(".*.tmp"):
                tmp.unlink()

    def rollback_target(self, best_step: int | None) -> Path | None:
        """Where a rollback goes: best.pt while the run has a best, else the newest checkpoint
        (every saved checkpoint had finite losses), else None."""
        best = self.folder.best_checkpoint
        if best_step is not None and best.is_file():
            return best
        return self.latest()

    def link_best(self, path: Path) -> None:
        """Point best.pt at the checkpoint `path`."""
        if self.writes:
            _atomic(self.folder.best_checkpoint, lambda tmp: _link_or_copy(path, tmp))

    def save(self, ckpt: Checkpoint, best: bool = False) -> Path | None:
        """Write `ckpt` as the checkpoint of its step, point last.pt (and, if it is the `best`,
        best.pt) at it, keep the newest K."""
        if not self.writes:
            return None
        folder = self.folder.checkpoints
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{ckpt.step:07d}.pt"
        state = codec.encode(ckpt)
        _atomic(path, lambda tmp: torch.save(state, tmp))
        _atomic(folder / LAST, lambda tmp: _link_or_copy(path, tmp))
        if best:
            self.link_best(path)
        for old in list_checkpoints(self.folder.path)[: -self.keep]:
            old.unlink()
        return path


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
