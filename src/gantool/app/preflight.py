"""What `gantool train` and `gantool resume` check before anything is written.

A command that is refused (a bad override, a missing device, a folder that already holds a
run, a damaged run folder, a changed model, another process training there, nothing left to
do) must create no folder and leave every byte of an existing run as it was. So every check
that can refuse runs here, reading only, before Hydra makes the run folder or writes its
.hydra/ files, and before training starts.
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser

from gantool.config.compose import check_stored
from gantool.config.schema import Config, run_length
from gantool.core.errors import ConfigError, GantoolError
from gantool.training.run_folder import RunFolder

MULTIRUN_FLAGS = ("-m", "--multirun", "hydra.mode=MULTIRUN")


def check_new_run(args: list[str], world_size: int = 1) -> None:
    """`gantool train ARGS`: compose and check the config, the device, the data and the run
    folder; download an image set's missing files where dataset.download allows it.

    Skipped for sweeps (each job checks itself, and a failing job must not stop the others)
    and for Hydra's own flags (--help, --cfg, -sc, ...), which train nothing.
    """
    if any(a in MULTIRUN_FLAGS for a in args):
        check_sweep_folder(args)
        check_sweep_loggers(args)
        return
    if any(a.startswith("-") for a in args):
        return
    # Here, not at the top: the config's checks import torch, which Hydra's flags never need.
    from gantool.datasets.registry import load_config

    cfg = load_config(task_overrides(args))
    check_device(cfg)
    check_logger(cfg.logger.name)
    from gantool.training.loop import check_fits  # torch, as above

    check_fits(cfg)
    if world_size == 1:  # under torchrun, rank 0 does it alone once the processes have met
        prepare_data(cfg)
    else:
        from gantool.runtime.distributed import check_config  # torch, as above

        check_config(cfg, world_size)
    run_dir = override_value(args, "hydra.run.dir")
    if run_dir is None or "${" in run_dir:
        return  # a new time-stamped folder
    if not run_dir.strip():
        raise ConfigError(
            "hydra.run.dir is empty: it would train into the current folder; name a folder"
        )
    RunFolder(run_dir).check_new()


def check_sweep_folder(args: list[str]) -> None:
    """A sweep whose folder is itself a run's (hydra.sweep.dir=RUN) would write Hydra's
    multirun.yaml into it: refused before the sweep starts. Each job checks its own folder."""
    sweep_dir = override_value(args, "hydra.sweep.dir")
    if sweep_dir and "${" not in sweep_dir:
        RunFolder(sweep_dir).check_new()


def check_sweep_loggers(args: list[str]) -> None:
    """A sweep whose `logger=` names a logger whose package is missing: refused before the
    sweep starts, rather than in each job."""
    parser = OverridesParser.create()
    for arg in args:
        if arg.split("=", 1)[0].lstrip("+~") != "logger":
            continue
        try:
            override = parser.parse_override(arg)
        except Exception:  # Hydra's parse errors have no common public base; Hydra reports them
            continue
        sweep = override.is_sweep_override()
        for name in override.sweep_string_iterator() if sweep else [override.value()]:
            check_logger(str(name))


def check_logger(name: str) -> None:
    """logger=mlflow or wandb without its package: one line naming the extra, written nothing."""
    from gantool.app.loggers import check_installed  # Here: the loggers module imports torch

    check_installed(name)


def prepare_data(cfg: Config) -> None:
    """Download an image set's missing files where dataset.download allows it, then refuse
    data that cannot be had."""
    from gantool.app.download import fetch_missing  # torch, as in check_new_run
    from gantool.datasets.registry import check_batch, family

    fetch_missing(cfg.dataset)
    family(cfg.dataset).check_available(cfg.dataset)
    check_batch(cfg)


def override_value(args: list[str], key: str) -> str | None:
    """The value the last override of `key` sets, unquoted as Hydra reads it; None if unset."""
    parser = OverridesParser.create()
    found = None
    for arg in args:
        if arg.split("=", 1)[0].lstrip("+~") != key:
            continue
        try:
            found = str(parser.parse_override(arg).value() or "")
        except Exception:  # Hydra's parse errors have no common base; Hydra reports them
            found = arg.split("=", 1)[1] if "=" in arg else ""
    return found


def merge_overrides(old: list[str], new: list[str]) -> list[str]:
    """The run's saved overrides with the new ones applied: a new value for a key replaces it."""

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    replaced = {key(o) for o in new}
    return [o for o in old if key(o) not in replaced] + list(new)


def plan_resume(folder: RunFolder, new: list[str], check_lock: bool = True) -> list[str]:
    """The overrides to resume `folder` with, after every check that could refuse it.

    Raises GantoolError (ConfigError for bad overrides) or NothingToDo; writes nothing.
    `check_lock` is off for the other processes of a torchrun job, whose rank 0 holds it.
    """
    # Here, not at the top: checkpoints and configs need torch; `gantool --help` does not.
    from gantool.datasets.registry import batches_per_epoch, load_config
    from gantool.training.checkpointer import Checkpointer, list_checkpoints
    from gantool.training.loop import check_not_done

    saved = folder.read_overrides()
    check_stored(saved, folder.overrides_file)  # the folder may come from anywhere
    if check_lock:
        folder.check_free()
    if not list_checkpoints(folder.path):
        raise GantoolError(f"nothing to resume: no checkpoint in {folder.checkpoints}")
    overrides = merge_overrides(saved, new)
    cfg = load_config(task_overrides(overrides))
    check_device(cfg)
    check_logger(cfg.logger.name)
    t = cfg.trainer
    _, ckpt = Checkpointer(folder, t.keep_checkpoints, writes=False).newest(cfg)
    total = run_length(t, batches_per_epoch(cfg, ckpt.epoch_size))
    check_not_done(folder.path, ckpt.step, total, t)
    return overrides


def task_overrides(overrides: list[str]) -> list[str]:
    """The overrides of the job's config, without those of Hydra itself (hydra.*)."""
    return [o for o in overrides if not o.lstrip("+~").startswith("hydra")]


def check_device(cfg: Config) -> None:
    """A device the config names but this machine lacks is refused before anything starts."""
    if cfg.device.name in ("cuda", "mps"):
        from gantool.runtime.device import resolve_device  # torch, as in check_new_run

        resolve_device(cfg.device.name)
