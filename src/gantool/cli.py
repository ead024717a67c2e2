"""The `gantool` command: pick the subcommand, hand training to Hydra, call plain functions.

    gantool train [HYDRA OVERRIDES AND FLAGS]
    gantool resume RUN_DIR [OVERRIDES]
    gantool sample CHECKPOINT_OR_RUN_DIR [--num N] [--out FILE] [--seed S]
    gantool report SWEEP_DIR [--sort METRIC]

Heavy modules (torch, torchvision, matplotlib) are imported only once a command needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
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
  eval    CHECKPOINT_OR_RUN_DIR [--num N]
                               score a trained generator; writes RUN_DIR/eval.json
  report  SWEEP_DIR [--sort METRIC]
                               one row per job of a sweep; also writes SWEEP_DIR/report.csv
  bench   [--out DIR]          measure training speed on this machine; writes bench.json

examples:
  gantool train                                   # the 1-D Gaussian N(4, 1.25²)
  gantool train dataset=mnist dataset.root=data   # the MLP GAN on MNIST
  gantool train experiment=keras_mnist            # a preset: seed_gaussian, seed_mnist, keras_mnist
  gantool train -m optimizer.g.lr=1e-3,2e-4       # a sweep, one folder per job
  torchrun --standalone --nproc_per_node=2 -m gantool train   # data-parallel (DDP), 2 processes
  gantool resume outputs/2026-01-01/12-00-00-4242 trainer.steps=4000
  gantool report outputs/multirun/2026-01-01/12-00-00-4242 --sort w1
"""

HYDRA_COMPLETION_FLAGS = ("-sc", "--shell-completion")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return
    command, args = argv[0], argv[1:]
    try:
        if command in HYDRA_COMPLETION_FLAGS:
            _drop_subcommand_from_completion_line()
            run_train(argv)
        elif command in COMMANDS:
            COMMANDS[command](args)
        else:
            raise GantoolError(f"unknown command {command!r}: expected {', '.join(COMMANDS)}")
    except GantoolError as e:
        _exit(e)


def run_train(args: list[str]) -> None:
    """Run the Hydra app behind `gantool train` with these command-line arguments."""
    import hydra

    from gantool.config import config_dir, register_configs
    from gantool.errors import ConfigError, describe_config_error

    register_configs()
    rank, world_size = _torchrun()
    private_dir = None
    if world_size > 1:
        if any(arg in ("-m", "--multirun", "hydra.mode=MULTIRUN") for arg in args):
            raise GantoolError("sweeps (-m) do not run under torchrun: start one torchrun per job")
        if rank > 0:
            # Hydra would make a time-stamped run folder in every process. Only rank 0's is
            # the run's: the others get a temporary one, and train into rank 0's.
            private_dir = tempfile.mkdtemp(prefix=f"gantool-rank{rank}-")
            args = [*args, f"hydra.run.dir={_quoted(private_dir)}", "hydra.output_subdir=null"]
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
    finally:
        if private_dir:
            shutil.rmtree(private_dir, ignore_errors=True)


def _train_job(dict_cfg) -> float | None:
    """One training job: Hydra calls this once per run, or once per job of a sweep.

    It returns the objective (trainer.objective's value), which sweepers such as Optuna's
    minimise or maximise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gantool.config import to_config

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    rank, _ = _torchrun()
    try:
        cfg = to_config(dict_cfg)
        from gantool import distributed
        from gantool.trainer import train  # imports torch: only once a run really starts

        with distributed.process_group(cfg):  # under torchrun; no group for one process
            run_dir = distributed.from_main(lambda: run_dir)  # rank 0's folder, on every rank
            summary = train(cfg, run_dir)
    except GantoolError as e:
        if rank == 0:
            _record_failure(run_dir, e)
        if hydra_cfg.mode == RunMode.MULTIRUN and not isinstance(e, Interrupted):
            # Hydra goes on with the sweep's other jobs and raises this one at the end.
            # (Ctrl-C or SIGTERM ends the whole sweep: _exit below raises SystemExit, which
            # Hydra's launcher does not catch.)
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
    from gantool.evaluate import targets

    if rank == 0:
        print_summary(summary, targets(cfg))
    return summary.get("objective", {}).get("value")


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
    run_train([*overrides, f"hydra.run.dir={_quoted(run_dir)}"])


def _quoted(path: str | Path) -> str:
    """A path as a quoted Hydra override value: any character may appear in it."""
    escaped = str(path).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def merge_overrides(old: list[str], new: list[str]) -> list[str]:
    """The run's saved overrides with the new ones applied: a new value for a key replaces it."""

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    replaced = {key(o) for o in new}
    return [o for o in old if key(o) not in replaced] + list(new)


def _generator_parser(prog: str, description: str, num_help: str) -> argparse.ArgumentParser:
    """The arguments of the commands that use a trained generator: sample and eval."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("path", help="a checkpoint file, or a run folder (its latest checkpoint)")
    parser.add_argument("--num", type=int, help=num_help)
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    return parser


def _parse_generator_args(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    opts = parser.parse_args(args)
    if opts.num is not None and opts.num < 1:
        parser.error(f"--num={opts.num}: must be >= 1")
    return opts


def sample(args: list[str]) -> None:
    parser = _generator_parser(
        "gantool sample",
        "Draw samples from a trained generator: an image grid for MNIST, or the samples (CSV) "
        "and their histogram for the Gaussian.",
        "number of samples (default 64)",
    )
    parser.add_argument(
        "--out", type=Path, help="PNG to write (default: RUN_DIR/samples/sample_step_N.png)"
    )
    opts = _parse_generator_args(parser, args)
    opts.num = opts.num or 64
    from gantool.console import console
    from gantool.sampling import sample_checkpoint

    for path in sample_checkpoint(opts.path, opts.num, opts.out, opts.seed, opts.device):
        console.print(f"Wrote {path}")


def report(args: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="gantool report",
        description="One row per job of a sweep (or one row for a run folder): status, "
        "overrides, final losses, eval metrics, objective and wall time. Also writes "
        "SWEEP_DIR/report.csv with every job's full overrides.",
    )
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="a sweep or run folder")
    parser.add_argument(
        "--sort",
        metavar="METRIC",
        help="best first by this metric, e.g. fld, eval/fld or d_loss (descending for "
        "precision, recall, num_classes_covered and classifier_accuracy; default: job order)",
    )
    opts = parser.parse_args(args)
    from gantool.report import report as report_sweep  # reads JSON and YAML only: no torch

    report_sweep(opts.sweep_dir, opts.sort)


def evaluate(args: list[str]) -> None:
    parser = _generator_parser(
        "gantool eval",
        "Score a trained generator (its EMA when the run kept one): moments, KS and W1 for the "
        "Gaussian; FLD, precision, recall and class coverage for MNIST, beside real images and "
        "uniform noise. Prints a table and writes RUN_DIR/eval.json.",
        "generated samples to score (default: trainer.num_eval_samples)",
    )
    parser.add_argument(
        "--data-root", help="MNIST: the dataset.root to score against (default: the run's)"
    )
    opts = _parse_generator_args(parser, args)
    from gantool.console import console, print_eval
    from gantool.evaluate import evaluate_checkpoint, targets

    trained, results, path = evaluate_checkpoint(
        opts.path, opts.num, opts.seed, opts.device, opts.data_root
    )
    console.print(f"{trained.checkpoint} (step {trained.step})")
    print_eval(results, targets(trained.config))
    console.print(f"Wrote {path}")


def bench(args: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="gantool bench",
        description="Measure training speed on this machine: MNIST throughput and FLOP "
        "utilisation against the textbook DataLoader loop, Gaussian time-to-quality, start-up. "
        "Prints a table and writes OUT/bench.json.",
    )
    parser.add_argument(
        "--out", type=Path, help="folder for bench.json and its runs (default outputs/bench/TIME)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    parser.add_argument(
        "--mnist-root",
        default="data",
        help="dataset.root holding MNIST/raw (default data); random images if absent",
    )
    parser.add_argument("--steps", type=int, default=300, help="timed MNIST steps (default 300)")
    parser.add_argument(
        "--gaussian-seeds", type=int, default=5, help="Gaussian runs, 0 skips them (default 5)"
    )
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up timings")
    opts = parser.parse_args(args)
    if opts.steps < 1 or opts.gaussian_seeds < 0:
        parser.error("--steps must be >= 1 and --gaussian-seeds >= 0")
    import time

    from gantool.bench import BenchOptions, print_bench, run_bench
    from gantool.console import console

    out = opts.out or Path("outputs", "bench", time.strftime("%Y-%m-%d_%H-%M-%S"))
    bench_opts = BenchOptions(
        out=out,
        device=opts.device,
        mnist_root=opts.mnist_root,
        steps=opts.steps,
        gaussian_seeds=opts.gaussian_seeds,
        startup=not opts.no_startup,
    )
    results = run_bench(bench_opts, report=lambda line: console.print(line, highlight=False))
    print_bench(results)
    console.print(f"Wrote {out / 'bench.json'}")


COMMANDS = {
    "train": run_train,
    "resume": resume,
    "sample": sample,
    "eval": evaluate,
    "report": report,
    "bench": bench,
}


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


def _torchrun() -> tuple[int, int]:
    """This process' RANK and the WORLD_SIZE, as torchrun sets them; (0, 1) without it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _exit(error: GantoolError) -> None:
    from gantool.console import print_error

    rank, _ = _torchrun()
    if rank == 0:
        print_error(str(error))
    elif not isinstance(error, Interrupted):  # all stop together; rank 0 says where it saved
        print_error(f"rank {rank}: {error}")
    sys.exit(error.exit_code)
