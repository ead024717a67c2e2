"""A run's folder: its paths, the lock that keeps a second process out, and its records.

    RUN_DIR/
      .hydra/overrides.yaml   the overrides the run was started with (Hydra writes it)
      .lock                   held by the process training in the folder; holds its PID
      checkpoints/            step_NNNNNNN.pt, last.pt and best.pt (checkpointer.py)
      samples/ plots/         pictures
      metrics.jsonl           one row per log interval
      summary.json            how the run ended: completed (with its evaluation), failed or
                              interrupted; a completed summary is never replaced by a failure
      failure.json            how a later resume of a completed run failed, if one did

This module imports no torch: `gantool report` and `gantool resume`'s checks use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

from gantool.core.errors import ConfigError, GantoolError
from gantool.core.files import MetricsLog, NotRegular, read_regular, write_file, write_json

try:  # POSIX; elsewhere runs go unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

COMPLETED = "completed"


class Logger(Protocol):
    """Where a run's numbers and pictures go besides metrics.jsonl and samples/ (TensorBoard:
    gantool.app.loggers)."""

    def scalars(self, step: int, values: dict) -> None: ...
    def picture(self, step: int, png: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class Summary:
    """summary.json of a completed run; a failed or interrupted one holds status and error."""

    status: str
    run_dir: str
    step: int
    first_step_time: float  # Unix time of the first step: what came before it is start-up
    train_seconds: float
    wall_seconds: float
    samples: str  # the last sample picture
    final: dict  # the last metrics row
    eval: dict  # the end-of-run evaluation, eval/* keys (empty with trainer.eval_at_end=false)
    objective: dict  # {"name": trainer.objective, "value": its number or None}
    targets: dict  # what a perfect generator would score, where not simply lowest or highest
    # The periodic evaluation's (trainer.eval_every; gantool.training.watch): the best step,
    # objective and value (checkpoints/best.pt), why the run stopped early (None: it ran its
    # length), each rollback, and how many evaluations took how long in this process.
    best: dict = dataclasses.field(default_factory=dict)
    stopped_early: str | None = None
    rollbacks: list = dataclasses.field(default_factory=list)
    num_evaluations: int = 0
    eval_seconds: float = 0.0


# Lock files this process holds: path -> (file descriptor, nesting depth). flock() locks
# belong to an open file, so a second open() in the same process would lock itself out.
_held: dict[Path, list[int]] = {}


class RunFolder:
    """Every path of a run, and its writer: only the process that `writes` (rank 0 under
    torchrun) touches files; for the others the logging methods do nothing."""

    def __init__(self, path: str | Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes
        self._metrics = MetricsLog(self.metrics)
        self._loggers: Sequence[Logger] = ()

    # --- the logs of a training process ------------------------------------------------------
    def start_logs(self, step: int, loggers: Sequence[Logger] = ()) -> None:
        """Continue the logs from `step`: rows logged after it are dropped (a resumed run logs
        them again); `loggers` have dropped their own records after it the same way."""
        if not self.writes:
            return
        self._metrics.truncate_after(step)
        self._loggers = loggers

    def log_row(self, step: int, row: dict) -> None:
        """A row of metrics.jsonl (and of each logger)."""
        if self.writes:
            self._metrics.append(row)
        for logger in self._loggers:
            logger.scalars(step, row)

    def log_picture(self, step: int, png: bytes) -> None:
        """A sample picture: samples/step_N.png (and each logger's)."""
        if not self.writes:
            return
        write_file(self.sample_image(step), png)
        for logger in self._loggers:
            logger.picture(step, png)

    def rows(self) -> list[dict]:
        return self._metrics.rows()

    def sample_pictures(self) -> list[bytes]:
        """The sample pictures of samples/step_N.png, oldest first."""
        return [p.read_bytes() for p in sorted(self.samples.glob("step_*.png"))]

    def write_picture(self, name: str, data: bytes) -> None:
        """An end-of-run picture: plots/NAME, or samples/progress.gif."""
        if self.writes:
            where = self.samples if name.endswith(".gif") else self.plots
            write_file(where / name, data)

    def flush_logs(self) -> None:
        """Everything logged so far to disk: at each checkpoint."""
        for logger in self._loggers:
            logger.flush()

    def close_logs(self, step: int, results: dict) -> None:
        """The end of training: the evaluation's numbers go to the loggers too."""
        for logger in self._loggers:
            logger.scalars(step, results)
            logger.close()
        self._loggers = ()

    # --- paths ----------------------------------------------------------------------------------
    @property
    def overrides_file(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def failure(self) -> Path:
        return self.path / "failure.json"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    @property
    def best_checkpoint(self) -> Path:
        """The checkpoint at the best periodic evaluation (training/watch.py)."""
        return self.checkpoints / "best.pt"

    def sample_image(self, step: int) -> Path:
        return self.samples / f"step_{step:07d}.png"

    def owns(self, path: Path) -> bool:
        """Whether `path` is one of the run's own files, which only training writes: its
        checkpoints, records, logs and .hydra/ (samples/, plots/ and eval.json are outputs
        that `gantool sample` and `eval` may write)."""
        here, there = Path(os.path.abspath(self.path)), Path(os.path.abspath(path))
        if there.parent.parent == here and there.parent.name in ("checkpoints", ".hydra"):
            return True
        records = (self.summary, self.failure, self.metrics, self.lock_file, self.train_log)
        return there.parent == here and there.name in {r.name for r in records}

    def holds_run(self) -> bool:
        """Whether a run has already been started here."""
        return any(
            p.exists() for p in (self.overrides_file, self.checkpoints, self.metrics, self.summary)
        )

    def check_new(self) -> None:
        """Refuse, writing nothing, to start a new run here: another process trains in the
        folder (named by its PID), or it holds a run already."""
        self.check_free()
        if self.holds_run():
            raise RunTaken(
                f"{self.path} already holds a run: continue it with `gantool resume "
                f"{self.path}`, or choose another folder"
            )

    def write_start(self, config: str, hydra: str, overrides: str) -> None:
        """The run's record of how it was started, as YAML: the composed config, Hydra's
        settings and the overrides (the ones `gantool resume` starts from). Written once the
        run holds the folder, never by a command that is refused."""
        written = []
        try:
            for name, text in (("config", config), ("hydra", hydra), ("overrides", overrides)):
                path = self.overrides_file.with_name(f"{name}.yaml")
                write_file(path, text.encode())
                written.append(path)
        except GantoolError:  # all three or none: a folder that cannot hold them is left as it was
            for path in written:
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.overrides_file.parent.rmdir()
            raise

    # --- the lock -------------------------------------------------------------------------------
    def holder(self) -> int | None:
        """The PID of another process training in this folder, or None. Creates nothing; a
        .lock that is not a regular file (a link, a folder, a FIFO) is one line."""
        if fcntl is None or not os.path.lexists(self.lock_file):
            return None
        if self.lock_file.resolve() in _held:
            return None
        fd = self._open_lock(os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def lock(self, announce: bool = True) -> Iterator[None]:
        """Hold the folder for this process; a second process gets one line naming the first.

        Reentrant within a process, released when the block ends (or the process dies). With
        `announce`, .lock takes this process's PID at once; without, only at announce(), once
        the checks that may refuse the command have passed (a refused one writes nothing)."""
        if fcntl is None:  # pragma: no cover
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        key = self.lock_file.resolve()
        if key in _held:
            _held[key][1] += 1
            try:
                yield
            finally:
                _held[key][1] -= 1
            return
        fd = self._open_lock(os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise in_use(self.path, pid) from None
        _held[key] = [fd, 1]
        if announce:
            self.announce()
        try:
            yield
        finally:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                del _held[key]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def announce(self) -> None:
        """Write this process's PID into the .lock it holds: what a refused process names."""
        fd = _held[self.lock_file.resolve()][0]
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _open_lock(self, flags: int) -> int:
        """The .lock file, opened without following a link and without waiting on a FIFO;
        anything but a regular file is refused in one line."""
        try:
            fd = os.open(self.lock_file, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            raise GantoolError(
                f"{self.lock_file} is not a lock file gantool can use ({e.strerror}): it must "
                "be a regular file; remove it if no gantool process is running there"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise GantoolError(
                f"{self.lock_file} is not a regular file: remove it if no gantool process is "
                "running there"
            )
        return fd

    def check_free(self) -> None:
        """Refuse, writing nothing, when another process trains in this folder."""
        pid = self.holder()
        if pid is not None:
            raise in_use(self.path, pid)

    # --- records --------------------------------------------------------------------------------
    def read_summary(self) -> dict | None:
        return _read_record(self.summary)

    def read_failure(self) -> dict | None:
        """failure.json: how a resume of this completed run failed, or None."""
        record = _read_record(self.failure)
        return record if record and {"status", "error"} <= record.keys() else None

    def write_summary(self, summary: Summary) -> None:
        """A completed run's summary: it replaces any earlier record, failures included."""
        write_json(self.summary, dataclasses.asdict(summary))
        self.failure.unlink(missing_ok=True)

    def record_end(self, status: str, error: str) -> None:
        """A run that failed or was interrupted. If the folder holds a completed run (a resume
        of it failed), its summary stays and the failure goes beside it into failure.json."""
        record = {"status": status, "error": error}
        previous = self.read_summary()
        if previous and previous.get("status") == COMPLETED:
            write_json(self.failure, record)
        else:
            write_json(self.summary, record)

    def recorded_cwd(self) -> Path | None:
        """The folder the run was started in, as Hydra recorded it in .hydra/hydra.yaml (for
        checkpoints from before they recorded it themselves), or None."""
        unreadable = (OSError, ValueError, yaml.YAMLError, LookupError, TypeError, NotRegular)
        with contextlib.suppress(*unreadable):
            saved = yaml.safe_load(read_regular(self.overrides_file.with_name("hydra.yaml")))
            cwd = saved["hydra"]["runtime"]["cwd"]
            if isinstance(cwd, str) and os.path.isabs(cwd):
                return Path(cwd)
        return None

    def read_overrides(self) -> list[str]:
        """The overrides the run was started with; a damaged file is a one-line error."""
        where = self.overrides_file
        if not where.is_file():
            raise GantoolError(f"{self.path} is not a gantool run folder: {where} is missing")
        try:
            loaded = yaml.safe_load(read_regular(where).decode("utf-8"))
        except UnicodeDecodeError:
            raise GantoolError(f"{where} is damaged: it is not UTF-8 text") from None
        except yaml.YAMLError as e:
            line = str(e).splitlines()[0] if str(e) else "not YAML"
            raise GantoolError(f"{where} is damaged: {line}") from None
        except OSError as e:
            raise GantoolError(f"cannot read {where}: {e.strerror or e}") from None
        if loaded is None:
            raise GantoolError(
                f"{where} is empty; a run folder's overrides.yaml lists its overrides "
                "([] for none), so it is damaged: restore it or start a new run"
            )
        if not isinstance(loaded, list) or not all(isinstance(o, str) for o in loaded):
            raise GantoolError(f"{where} is damaged: expected a list of overrides")
        return loaded


def best_checkpoint(path: str | Path) -> Path:
    """`gantool sample --best`, `eval --best`: the run folder's best.pt, or one line saying why
    there is none."""
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise ConfigError(f"--best takes a run folder; {path} is not one")
    if not folder.best_checkpoint.is_file():
        raise GantoolError(
            f"{path} has no best checkpoint ({folder.best_checkpoint}): a run keeps one when "
            "trainer.eval_every is set"
        )
    return folder.best_checkpoint


class RunInUse(GantoolError):
    """Another process holds the run folder."""


class RunTaken(ConfigError):
    """The folder already holds a run, and the command would start a new one there."""


def in_use(path: Path, pid: int | None) -> RunInUse:
    who = f"process {pid}" if pid else "another process"
    return RunInUse(
        f"{path} is in use: {who} is training in it; wait for it to end or stop it first"
    )


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(read_regular(path))
    except (OSError, ValueError, NotRegular):
        return None
    return record if isinstance(record, dict) else None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
