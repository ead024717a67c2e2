"""Files: the one atomic writer, JSON records, and metrics as JSON lines."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from gantool.core.errors import GantoolError, first_line

log = logging.getLogger(__name__)

_UMASK = os.umask(0)  # read once: it can only be read by setting it
os.umask(_UMASK)


class NotRegular(GantoolError):
    """A path that names something other than a regular file: a FIFO, a device, a folder."""


def read_regular(path: Path) -> bytes:
    """A regular file's bytes. Anything else is refused without waiting on it: a FIFO named
    like a run's file, or /dev/urandom given as data, would otherwise block or never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(f"{path} is not a regular file: gantool reads only regular files")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call write(temporary path) for a file in path's folder, then move it onto `path`.

    A crash, a kill or a full disk never leaves a half-written file under `path`'s name: the
    reader sees the old file or the new one. The temporary file is removed on failure.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would make it: mkstemp makes it owner-only
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_file(path: Path, data: bytes) -> None:
    """Write `data` atomically, making the missing folders above `path`. On failure the
    folders made here are removed again and the error is one line (exit 1)."""
    made: list[Path] = []
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    try:
        for new in reversed(made):
            new.mkdir()
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    except OSError as e:
        for new in made:
            with contextlib.suppress(OSError):
                new.rmdir()
        raise GantoolError(f"cannot write {path}: {why_not_written(e)}") from e


def why_not_written(error: OSError) -> str:
    """An OSError of a write, as the one line says it."""
    if error.errno == errno.ENOSPC:
        return "the disk is full"
    return error.strerror or first_line(error)


def write_json(path: Path, data: dict) -> None:
    """`data` as indented JSON, written atomically."""
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


class MetricsLog:
    """``metrics.jsonl``: one JSON object per log interval, keyed like ``train/d_loss``."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        """The complete rows. A last line cut short (a kill or a full disk mid-write) is left
        out with a warning; any other unreadable line is too."""
        if not self.path.exists():
            return []
        rows = []
        for number, line in enumerate(read_regular(self.path).splitlines(), 1):
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
            elif line.strip():
                log.warning("%s line %d is not a complete row; left out", self.path, number)
        return rows

    def truncate_after(self, step: int) -> None:
        """Keep the complete rows up to `step`: a resumed run logs the later steps again."""
        if self.path.exists():
            text = "".join(json.dumps(r) + "\n" for r in self.rows() if r["step"] <= step)
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))
