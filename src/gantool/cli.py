"""The `gantool` command: pick the subcommand, hand training to Hydra, call plain functions.

    gantool train [HYDRA OVERRIDES AND FLAGS]
    gantool resume RUN_DIR [OVERRIDES]
    gantool sample CHECKPOINT_OR_RUN_DIR [--num N] [--out FILE] [--seed S] [--label L]
    gantool report SWEEP_DIR [--sort METRIC]

Heavy modules (torch, torchvision, matplotlib) are imported only once a command needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from gantool.errors import GantoolError, Interrupted, NothingToDo

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

options:
  -h, --help   this text; `gantool COMMAND --help` describes a command
  --version    gantool's version

examples:
  gantool train                                   # the 1-D Gaussian N(4, 1.25²)
  gantool train dataset=mnist dataset.root=data   # the MLP GAN on MNIST
  gantool train experiment=keras_mnist            # a preset (`gantool train --help` lists them)
  gantool train dataset=ring loss=hinge           # a GAN variant: also lsgan, wgan_gp, ...
  gantool train -m optimizer.g.lr=1e-3,2e-4       # a sweep, one folder per job
  gantool train -m dataset=ring variant=bce,wgan_gp,pack2  # GAN variants compared in one sweep
  torchrun --standalone --nproc_per_node=2 -m gantool train   # data-parallel (DDP), 2 processes
  gantool resume outputs/2026-01-01/12-00-00-4242 trainer.steps=4000
  gantool report outputs/multirun/2026-01-01/12-00-00-4242 --sort w1
"""

RESUME_USAGE = """\
usage: gantool resume RUN_DIR [OVERRIDES]

Continue a stopped or finished run from its latest checkpoint, in the same folder, with the
run's own settings (its .hydra/overrides.yaml) plus any new overrides; a new value for a key
replaces the saved one. Settings that shape the model or the data cannot change.

arguments:
  RUN_DIR     a run folder, or one job's folder of a sweep (outputs/multirun/DATE/TIME-PID/N)
  OVERRIDES   Hydra overrides, as for `gantool train`, e.g. trainer.steps=4000

example:
  gantool resume outputs/2026-01-01/12-00-00-4242 trainer.steps=4000
"""

HELP_FLAGS = ("-h", "--help")
HYDRA_COMPLETION_FLAGS = ("-sc", "--shell-completion")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in HELP_FLAGS:
        print(USAGE, end="")
        return
    if argv[0] == "--version":
        print(f"gantool {_version()}")
        return
    command, args = argv[0], argv[1:]
    if command == "resume" and any(arg in HELP_FLAGS for arg in args):
        print(RESUME_USAGE, end="")  # the other commands' parsers (argparse, Hydra) have theirs
        return
    try:
        if command in HYDRA_COMPLETION_FLAGS:
            from gantool.completion import shell_completion

            shell_completion(argv, list(COMMANDS), run_train)
        elif command in COMMANDS:
            COMMANDS[command](args)
        else:
            raise GantoolError(f"unknown command {command!r}: expected {', '.join(COMMANDS)}")
    except GantoolError as e:
        _exit(e)
    except KeyboardInterrupt:  # before or after training, whose own handler saves a checkpoint
        _exit(Interrupted("SIGINT: stopped", signal.SIGINT))


def run_train(args: list[str], checked: bool = False) -> None:
    """Run the Hydra app behind `gantool train` with these command-line arguments.

    Unless `checked` (resume has checked them), the config, device and run folder are checked
    first, so that a refused run creates no folder.
    """
    import hydra

    from gantool.config import config_dir, register_configs
    from gantool.errors import ConfigError, describe_config_error
    from gantool.preflight import MULTIRUN_FLAGS, check_new_run

    register_configs()
    rank, world_size = _torchrun()
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
            args = [*args, f"hydra.run.dir={_quoted(private_dir)}", "hydra.output_subdir=null"]
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


def _say_where_the_sweep_is() -> None:
    from gantool.sweep import RememberSweepFolder

    folder = RememberSweepFolder.folder
    if folder:
        import shlex

        from gantool.console import console

        console.print(
            f"Sweep folder: {folder}\nCompare its jobs: gantool report {shlex.quote(folder)}"
        )


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
    except KeyboardInterrupt:  # outside training's own handler: start-up or the evaluation
        e = Interrupted(
            f"SIGINT before the run was wrapped up; its checkpoints are kept in {run_dir} "
            f"(`gantool resume {run_dir}` trains on, `gantool eval {run_dir}` scores the latest)",
            2,
        )
        if rank == 0:
            _record_failure(run_dir, e)
        _exit(e)
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

    if rank == 0:
        print_summary(summary, cfg.dataset.targets())
    return sweep_objective(summary.get("objective", {}), cfg.dataset.targets())


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
    from gantool.run_folder import RunFolder, RunInUse

    if isinstance(error, RunInUse | NothingToDo):  # the folder is another process's, or done
        return
    status = "interrupted" if isinstance(error, Interrupted) else "failed"
    with contextlib.suppress(OSError):  # if the folder itself failed, the error line says so
        RunFolder(run_dir).record_end(status, str(error))


def resume(args: list[str]) -> None:
    if not args or args[0].startswith("-"):
        raise GantoolError("usage: gantool resume RUN_DIR [OVERRIDES]")
    from gantool.preflight import plan_resume
    from gantool.run_folder import RunFolder

    folder = RunFolder(Path(args[0]).resolve())
    rank, _ = _torchrun()
    overrides = plan_resume(folder, args[1:], check_lock=rank == 0)  # refusals write nothing
    # Held from here to the end of training, so that no second process slips in between.
    with folder.lock() if rank == 0 else contextlib.nullcontext():
        run_train([*overrides, f"hydra.run.dir={_quoted(folder.path)}"], checked=True)


def _quoted(path: str | Path) -> str:
    """A path as a quoted Hydra override value: any character may appear in it."""
    escaped = str(path).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one `error:` line and exit 2, like every gantool error."""

    def error(self, message: str):
        from gantool.errors import ConfigError

        raise ConfigError(f"{self.prog}: {message}")


def _generator_parser(prog: str, description: str, num_help: str) -> argparse.ArgumentParser:
    """The arguments of the commands that use a trained generator: sample and eval."""
    parser = _OneLineParser(prog=prog, description=description)
    parser.add_argument(
        "path", help="a checkpoint file, or a run folder (its newest checkpoint that loads)"
    )
    parser.add_argument("--num", type=int, help=num_help)
    parser.add_argument("--seed", type=int, default=0, help="noise seed, 0 to 2^64-1 (default 0)")
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda", "mps"),
        metavar="DEVICE",
        help="auto, cpu, cuda or mps (default auto)",
    )
    return parser


def _parse_generator_args(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    """Parsed arguments, each checked before anything is loaded: out of range is one line."""
    from gantool.sampling import MAX_NUM, SEED_RANGE

    opts = parser.parse_args(args)
    if opts.num is not None and not 1 <= opts.num <= MAX_NUM:
        parser.error(f"--num {opts.num}: must be from 1 to {MAX_NUM:,}")
    low, high = SEED_RANGE
    if not low <= opts.seed <= high:
        parser.error(f"--seed {opts.seed}: must be from {low} to 2^64-1")
    return opts


def sample(args: list[str]) -> None:
    parser = _generator_parser(
        "gantool sample",
        "Draw samples from a trained generator and write them in the format --out's extension "
        "names: a picture (MNIST: a digit grid; the Gaussian: a histogram against the target) "
        "or the samples themselves.",
        "number of samples (default 10,000 for the Gaussian, 64 for MNIST: an 8x8 grid)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the file to write; .png (also .pdf, .svg for the Gaussian and vectors): the "
        "picture; .npy or .pt: the samples (MNIST: images (N, 28, 28) in [0, 1]; vectors: "
        "(N, F) in the data's units); .csv: the Gaussian's values or the vectors, under a "
        "header line (default: RUN_DIR/samples/sample_step_N.png)",
    )
    parser.add_argument(
        "--label",
        type=int,
        help="a conditional generator's class to draw, like 3 (default: every class in turn, "
        "one row of the grid each)",
    )
    opts = _parse_generator_args(parser, args)
    from gantool.console import console
    from gantool.sampling import sample_checkpoint

    trained, path = sample_checkpoint(
        opts.path, opts.num, opts.out, opts.seed, opts.device, opts.label
    )
    console.print(
        f"Wrote {path} (from {trained.checkpoint}, step {trained.step})",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


def report(args: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="gantool report",
        description="One row per job of a sweep (or one row for a run folder): status, "
        "overrides, final losses, eval metrics, objective and wall time, fitted to the "
        "terminal. Also writes SWEEP_DIR/report.csv with every column and every job's full "
        "overrides.",
    )
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="a sweep or run folder")
    parser.add_argument(
        "--sort",
        metavar="METRIC",
        help="best first by this metric, e.g. fld, eval/fld or d_loss (descending for "
        "precision, recall, num_classes_covered and classifier_accuracy; nearest the target "
        "for mean, std, skewness and excess_kurtosis; default: job order)",
    )
    opts = parser.parse_args(args)
    from gantool.report import report as report_sweep  # reads JSON and YAML only: no torch

    report_sweep(opts.sweep_dir, opts.sort)


def evaluate(args: list[str]) -> None:
    parser = _generator_parser(
        "gantool eval",
        "Score a trained generator (its EMA when the run kept one): moments, KS and W1 for the "
        "Gaussian; FLD, precision, recall and class coverage for MNIST, beside real images and "
        "uniform noise; for vectors, Fréchet distance, per-feature KS and W1, precision and "
        "recall beside real rows. Prints a table and writes RUN_DIR/eval.json (see --out).",
        "generated samples to score (default: trainer.num_eval_samples)",
    )
    parser.add_argument(
        "--data-root",
        help="MNIST: the folder holding MNIST/raw to score against (default: the run's "
        "dataset.root, a relative one taken from the folder the run was started in); vectors: "
        "the folder holding the data file (default: where the run's dataset.path points)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the .json file to write (default: RUN_DIR/eval.json; for a checkpoint outside a "
        "run's checkpoints/ folder, STEM.eval.json beside it)",
    )
    opts = _parse_generator_args(parser, args)
    from gantool.console import console, print_eval
    from gantool.evaluate import evaluate_checkpoint

    trained, results, path = evaluate_checkpoint(
        opts.path, opts.num, opts.seed, opts.device, opts.data_root, opts.out
    )
    console.print(
        f"{trained.checkpoint} (step {trained.step})", highlight=False, soft_wrap=True, markup=False
    )
    print_eval(results, trained.config.dataset.targets())
    console.print(f"Wrote {path}", highlight=False, soft_wrap=True, markup=False)


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
    parser.add_argument(
        "--fidelity-seeds",
        type=int,
        default=0,
        help="also run the 50-line Gaussian GAN as written, experiment=seed_gaussian, and the "
        "preset with reuse_fake on seeds 0..N-1 (5,000 iterations each, CPU, one thread; "
        "minutes per run) and count how many end near N(4, 1.25²); 0 skips it (default 0)",
    )
    opts = parser.parse_args(args)
    if opts.steps < 1 or opts.gaussian_seeds < 0 or opts.fidelity_seeds < 0:
        parser.error("--steps must be >= 1, --gaussian-seeds and --fidelity-seeds >= 0")
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
        fidelity_seeds=opts.fidelity_seeds,
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gantool")
    except PackageNotFoundError:  # run from a source tree that was never installed
        import gantool

        return getattr(gantool, "__version__", "unknown")


def _torchrun() -> tuple[int, int]:
    """This process' RANK and the WORLD_SIZE, as torchrun sets them; (0, 1) without it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _exit(error: GantoolError) -> None:
    from gantool.console import print_error

    rank, _ = _torchrun()
    if isinstance(error, NothingToDo):
        if rank == 0:
            print(error)
    elif rank == 0:
        print_error(str(error))
    elif not isinstance(error, Interrupted):  # all stop together; rank 0 says where it saved
        print_error(f"rank {rank}: {error}")
    sys.exit(error.exit_code)
