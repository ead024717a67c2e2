"""Files: the one atomic writer, JSON records, and metrics as JSON lines."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from gantool.core.errors import GantoolError, first_line

log = logging.getLogger(__name__)

_UMASK = os.umask(0)  # read once: it can only be read by setting it
os.umask(_UMASK)


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
        raise GantoolError(f"cannot write {path}: {e.strerror or first_line(e)}") from e


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
        for number, line in enumerate(self.path.read_bytes().splitlines(), 1):
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
