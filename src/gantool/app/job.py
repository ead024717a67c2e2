"""Running training jobs: the Hydra app behind `gantool train` and `gantool resume`, one call
per run or per job of a sweep; torchrun's ranks; how a job that fails is recorded; and what a
sweeper is given back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gantool.app.preflight import MULTIRUN_FLAGS, check_new_run, plan_resume, prepare_data
from gantool.app.show import exit_with, print_summary, torchrun
from gantool.config.compose import (
    check_booleans,
    config_dir,
    describe_config_error,
    register_configs,
)
from gantool.config.schema import Config
from gantool.core.console import LogHandler, console, print_error
from gantool.core.errors import ConfigError, GantoolError, Interrupted, NothingToDo
from gantool.core.signals import sigterm_as_interrupt
from gantool.training.run_folder import RunFolder, RunInUse, RunTaken

log = logging.getLogger("gantool")


def train(cfg: Config, run_dir: Path) -> dict:
    """Train (or resume) a checked config in run_dir, with the loggers cfg.logger names;
    return the run's summary. What `gantool train` runs for each job."""
    # Here, not at the top: torch, which `gantool train --help` and bad overrides never need.
    from gantool.app.loggers import opener
    from gantool.training.loop import train as train_loop

    return train_loop(cfg, run_dir, opener(cfg))


def run_train(args: list[str], checked: bool = False) -> None:
    """Run the Hydra app behind `gantool train` with these command-line arguments.

    Unless `checked` (resume has checked them), the config, device and run folder are checked
    first, so that a refused run creates no folder.
    """
    import hydra  # Here, not at the top: `gantool --help` never waits for Hydra's app.

    register_configs()
    # A log handler that cannot write (a full disk) must not print a traceback per line: the
    # write that fails next says it in one line.
    logging.raiseExceptions = False
    rank, world_size = torchrun()
    if not checked:
        check_new_run(args, world_size)
    private_dir = None
    if world_size > 1:
        if any(arg in MULTIRUN_FLAGS for arg in args):
            raise GantoolError("sweeps (-m) do not run under torchrun: start one torchrun per job")
        if rank > 0:
            # Hydra would make a time-stamped run folder in every process. Only rank 0's is
            # the run's: the others get a temporary one, and train into rank 0's.
            private_dir = tempfile.mkdtemp(prefix=f"gantool-rank{rank}-")
            args = [*args, f"hydra.run.dir={quoted(private_dir)}", "hydra.output_subdir=null"]
    sys.argv = [sys.argv[0], *args]
    # Hydra then raises its errors instead of printing them with a traceback and exit 1.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    app = hydra.main(config_path=str(config_dir()), config_name="train", version_base=None)
    try:
        app(_train_job)()
    except GantoolError as e:
        if not isinstance(e, Interrupted):
            _say_where_the_sweep_is()
        raise
    except Exception as e:
        if getattr(e, "gantool_job", False):  # a bug inside a job: its traceback should be seen
            raise
        if isinstance(e, OSError) and not type(e).__module__.startswith("hydra"):
            # Hydra creating the run folder (its MissingConfigException is an OSError too)
            where = e.filename or "the run folder"
            raise GantoolError(f"cannot write {where}: {e.strerror}") from e
        # Anything else failed while Hydra composed the config (it raises HydraException,
        # OmegaConf errors, and for some inputs plain ValueError or TypeError).
        raise ConfigError(describe_config_error(e, args)) from e
    else:
        _say_where_the_sweep_is()
    finally:
        if private_dir:
            shutil.rmtree(private_dir, ignore_errors=True)


# The folder `gantool resume` is continuing, in this process: its job may train in a folder
# that holds a run. Every other job starts a new run, in a folder that holds none.
_resuming: Path | None = None


def resume(run_dir: Path, overrides: list[str]) -> None:
    """`gantool resume RUN_DIR [OVERRIDES]`: every check first, then the run's own folder,
    held from the checks to the end of training so that no second process slips in."""
    global _resuming
    folder = RunFolder(run_dir.resolve())
    rank, _ = torchrun()
    overrides = plan_resume(folder, overrides, check_lock=rank == 0)  # refusals write nothing
    with folder.lock() if rank == 0 else contextlib.nullcontext():
        _resuming = folder.path
        try:
            run_train([*overrides, f"hydra.run.dir={quoted(folder.path)}"], checked=True)
        finally:
            _resuming = None


def _train_job(dict_cfg: DictConfig) -> float | None:
    """One training job: Hydra calls this once per run, or once per job of a sweep.

    Hydra has made the job's folder and written nothing in it (configs/train.yaml turns its
    .hydra/ off, and train.log opens at the first line logged). The job first holds the folder
    and checks that it may train there; only then is anything written. It returns the
    objective (trainer.objective's value), which sweepers such as Optuna's minimise or
    maximise."""
    from hydra.core.hydra_config import HydraConfig  # Hydra's app, as in run_train
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    folder = RunFolder(Path(hydra_cfg.runtime.output_dir))
    rank, _ = torchrun()
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        if sweep:  # parallel jobs' lines interleave on one console: each says whose it is
            for handler in logging.getLogger().handlers:
                if isinstance(handler, LogHandler):
                    handler.tag = f"[job {hydra_cfg.job.num}] "
        held = folder.lock(announce=False) if rank == 0 else contextlib.nullcontext()
        with sigterm_as_interrupt(), held:
            if rank == 0:
                claim(folder, dict_cfg, hydra_cfg)
            summary = _run(dict_cfg, list(hydra_cfg.overrides.task), folder.path)
    except KeyboardInterrupt as e:  # outside training's own handler: start-up or the evaluation
        signum = getattr(e, "signum", signal.SIGINT)
        error = Interrupted(
            f"{signal.Signals(signum).name} before the run was wrapped up; its checkpoints are "
            f"kept in {folder.path} (`gantool resume {folder.path}` trains on, `gantool eval "
            f"{folder.path}` scores the latest)",
            signum,
        )
        if rank == 0:
            _record_failure(folder.path, error)
        if sweep and RememberSweepFolder.launcher_pid != os.getpid():
            # One worker of a parallel sweep was stopped: the sweep goes on with the others.
            raise _job_failure(hydra_cfg, error) from e
        exit_with(error)
    except GantoolError as e:
        if rank == 0:
            _record_failure(folder.path, e)
        if sweep and not isinstance(e, Interrupted):
            # Hydra goes on with the sweep's other jobs and raises the first failure at the end.
            # (Ctrl-C or SIGTERM to the sweep's own process ends the whole sweep: exit_with
            # below raises SystemExit, which Hydra's launcher does not catch.)
            raise _job_failure(hydra_cfg, e) from e
        exit_with(e)
    except Exception as e:
        e.gantool_job = True  # tells run_train this is no config error
        raise
    if rank == 0:
        print_summary(summary, summary.get("targets", {}))
    return sweep_objective(summary.get("objective", {}), summary.get("targets", {}))


def claim(folder: RunFolder, task_cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """With the folder's lock held: refuse a folder that holds a run (unless `gantool resume`
    continues it), then record how the run was started in .hydra/."""
    if folder.path != _resuming:
        folder.check_new()
    folder.announce()
    folder.write_start(
        OmegaConf.to_yaml(task_cfg),
        OmegaConf.to_yaml({"hydra": hydra_cfg}),
        OmegaConf.to_yaml(hydra_cfg.overrides.task),
    )


def _run(dict_cfg: DictConfig, overrides: list[str], run_dir: Path) -> dict:
    """The summary of training the config in run_dir (rank 0's, under torchrun, where each
    process joins the others first). `overrides`: the job's, checked as `gantool train`'s
    are (a sweep's jobs are composed by Hydra's launcher, not by compose)."""
    # Here, not at the top: torch, which `gantool train --help` and bad overrides never need.
    from gantool.datasets.registry import to_config
    from gantool.runtime import distributed

    check_booleans(overrides)
    cfg = to_config(dict_cfg)
    with distributed.process_group(cfg):  # under torchrun; no group for one process
        run_dir = distributed.from_main(lambda: run_dir)  # rank 0's folder, on every rank
        with distributed.main_first():  # rank 0 downloads missing files, the others wait
            if distributed.is_main():
                prepare_data(cfg)
        return train(cfg, run_dir)


def _job_failure(hydra_cfg: DictConfig, error: GantoolError) -> GantoolError:
    """A sweep job's failure, said at once and raised to Hydra, which goes on with the others
    and raises the first at the end."""
    overrides = " ".join(hydra_cfg.overrides.task)
    failure = GantoolError(f"job {hydra_cfg.job.num} ({overrides}) failed: {error}")
    failure.exit_code = error.exit_code
    print_error(str(failure))
    return failure


def sweep_objective(objective: dict, targets: dict[str, float]) -> float | None:
    """What a sweeper minimises or maximises: the objective's value, or for a statistic with
    a target (eval/mean, eval/std, ...) its distance from the target."""
    value, target = objective.get("value"), targets.get(objective.get("name"))
    if value is None or target is None:
        return value
    return abs(value - target)


def _record_failure(run_dir: Path, error: GantoolError) -> None:
    """Record how the run ended, for the user and for sweep reports (see RunFolder.record_end):
    a completed run's summary is kept, and a failed resume of it goes beside it."""
    if isinstance(error, RunInUse | RunTaken | NothingToDo):  # another's run, or done
        return
    status = "interrupted" if isinstance(error, Interrupted) else "failed"
    with contextlib.suppress(OSError):  # if the folder itself failed, the error line says so
        RunFolder(run_dir).record_end(status, str(error))


class RememberSweepFolder(Callback):
    """A Hydra callback that remembers where a sweep writes, so `gantool train -m` can say it.
    Runs in the process that launches the sweep (also with the joblib launcher)."""

    folder: str | None = None
    launcher_pid: int | None = None  # the sweep's own process (a parallel job's worker: not)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        RememberSweepFolder.folder = str(config.hydra.sweep.dir)
        RememberSweepFolder.launcher_pid = os.getpid()


def _say_where_the_sweep_is() -> None:
    folder = RememberSweepFolder.folder
    if folder:
        console.print(
            f"Sweep folder: {folder}\nCompare its jobs: gantool report {shlex.quote(folder)}"
        )


def quoted(path: str | Path) -> str:
    """A path as a quoted Hydra override value: any character may appear in it."""
    escaped = str(path).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
