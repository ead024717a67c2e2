"""The `gantool` command: pick the subcommand, hand training to Hydra, call plain functions.

    gantool train [HYDRA OVERRIDES AND FLAGS]
    gantool resume RUN_DIR [OVERRIDES]
    gantool sample CHECKPOINT_OR_RUN_DIR [--num N] [--out FILE] [--seed S]

Heavy modules (torch, torchvision, matplotlib) are imported only once a command needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from gantool.errors import GantoolError, Interrupted

USAGE = """\
usage: gantool COMMAND [ARGS]

Train GANs from the command line, configured with Hydra.

commands:
  train   [OVERRIDES]          train a GAN; `gantool train --help` lists the config groups
  resume  RUN_DIR [OVERRIDES]  continue a run from its latest checkpoint, in the same folder
  sample  CHECKPOINT_OR_RUN_DIR [--num N] [--out FILE]
                               draw samples from a trained generator

examples:
  gantool train                                   # the 1-D Gaussian N(4, 1.25²)
  gantool train dataset=mnist dataset.root=data   # the MLP GAN on MNIST
  gantool train experiment=keras_mnist            # a preset: seed_gaussian, seed_mnist, keras_mnist
  gantool train -m optimizer.g.lr=1e-3,2e-4       # a sweep, one folder per job
  gantool resume outputs/2026-01-01/12-00-00-4242 trainer.steps=4000
"""

HYDRA_COMPLETION_FLAGS = ("-sc", "--shell-completion")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return
    command, args = argv[0], argv[1:]
    try:
        if command == "train":
            run_train(args)
        elif command == "resume":
            resume(args)
        elif command == "sample":
            sample(args)
        elif command in HYDRA_COMPLETION_FLAGS:
            _drop_subcommand_from_completion_line()
            run_train(argv)
        else:
            raise GantoolError(f"unknown command {command!r}: expected train, resume or sample")
    except GantoolError as e:
        _exit(e)


def run_train(args: list[str]) -> None:
    """Run the Hydra app behind `gantool train` with these command-line arguments."""
    import hydra

    from gantool.config import config_dir, register_configs
    from gantool.errors import ConfigError, describe_config_error

    register_configs()
    sys.argv = [sys.argv[0], *args]
    # Hydra then raises its errors instead of printing them with a traceback and exit 1.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    app = hydra.main(config_path=str(config_dir()), config_name="train", version_base=None)
    try:
        app(_train_job)()
    except GantoolError:
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


def _train_job(dict_cfg) -> None:
    """One training job: Hydra calls this once per run, or once per job of a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gantool.config import to_config

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        cfg = to_config(dict_cfg)
        from gantool.trainer import train  # imports torch: only once a run really starts

        summary = train(cfg, run_dir)
    except GantoolError as e:
        _record_failure(run_dir, e)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # Hydra goes on with the sweep's other jobs and raises this one at the end.
            logging.getLogger("gantool").error("%s", e)
            overrides = " ".join(hydra_cfg.overrides.task)
            failure = GantoolError(f"job {hydra_cfg.job.num} ({overrides}) failed: {e}")
            failure.exit_code = e.exit_code
            raise failure from e
        _exit(e)
    except Exception as e:
        e.gantool_job = True  # tells run_train this is no config error
        raise
    from gantool.console import print_summary

    print_summary(summary)


def _record_failure(run_dir: Path, error: GantoolError) -> None:
    """Leave summary.json saying how the run ended, for the user and for sweep reports."""
    from gantool.outputs import write_json

    status = "interrupted" if isinstance(error, Interrupted) else "failed"
    with contextlib.suppress(OSError):  # if the folder itself failed, the error line says so
        write_json(run_dir / "summary.json", {"status": status, "error": str(error)})


def resume(args: list[str]) -> None:
    if not args or args[0].startswith("-"):
        raise GantoolError("usage: gantool resume RUN_DIR [OVERRIDES]")
    from omegaconf import OmegaConf

    from gantool.checkpoint import checkpoint_dir, latest_checkpoint

    run_dir = Path(args[0]).resolve()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise GantoolError(f"{run_dir} is not a gantool run folder: {saved} is missing")
    if latest_checkpoint(run_dir) is None:
        raise GantoolError(f"nothing to resume: no checkpoint in {checkpoint_dir(run_dir)}")
    overrides = merge_overrides(list(OmegaConf.load(saved)), args[1:])
    quoted = str(run_dir).replace("\\", "\\\\").replace("'", "\\'")
    run_train([*overrides, f"hydra.run.dir='{quoted}'"])


def merge_overrides(old: list[str], new: list[str]) -> list[str]:
    """The run's saved overrides with the new ones applied: a new value for a key replaces it."""

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    replaced = {key(o) for o in new}
    return [o for o in old if key(o) not in replaced] + list(new)


def sample(args: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="gantool sample",
        description="Draw samples from a trained generator: an image grid for MNIST, or the "
        "samples (CSV) and their histogram for the Gaussian.",
    )
    parser.add_argument("path", help="a checkpoint file, or a run folder (its latest checkpoint)")
    parser.add_argument("--num", type=int, default=64, help="number of samples (default 64)")
    parser.add_argument(
        "--out", type=Path, help="PNG to write (default: RUN_DIR/samples/sample_step_N.png)"
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    opts = parser.parse_args(args)
    if opts.num < 1:
        parser.error(f"--num={opts.num}: must be >= 1")
    from gantool.console import console
    from gantool.sampling import sample_checkpoint

    for path in sample_checkpoint(opts.path, opts.num, opts.out, opts.seed, opts.device):
        console.print(f"Wrote {path}")


def _drop_subcommand_from_completion_line() -> None:
    """Hydra's shell completion runs `gantool -sc query=bash` with the typed line in COMP_LINE
    and the cursor in COMP_POINT; it expects the app name then overrides, so `train` goes."""
    line = os.environ.get("COMP_LINE", "")
    point = int(os.environ.get("COMP_POINT", len(line)))
    app, _, rest = line.partition(" ")
    subcommand, _, overrides = rest.lstrip().partition(" ")
    if subcommand == "train":
        shortened = f"{app} {overrides}"
        os.environ["COMP_LINE"] = shortened
        os.environ["COMP_POINT"] = str(max(len(app) + 1, point - (len(line) - len(shortened))))


def _exit(error: GantoolError) -> None:
    from gantool.console import print_error

    print_error(str(error))
    sys.exit(error.exit_code)
