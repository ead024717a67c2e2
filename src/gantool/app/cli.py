"""The `gantool` command: pick the subcommand, hand training to Hydra, call plain functions.

    gantool train [HYDRA OVERRIDES AND FLAGS]
    gantool resume RUN_DIR [OVERRIDES]
    gantool sample CHECKPOINT_OR_RUN_DIR [--num N] [--out FILE] [--seed S] [--label L]
    gantool report SWEEP_DIR [--sort METRIC] [--html]

Heavy modules (torch, torchvision, matplotlib) are imported only once a command needs them.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import gantool
from gantool.app.completion import shell_completion
from gantool.core.errors import ConfigError, GantoolError, Interrupted

DEVICES = ("auto", "cpu", "cuda", "mps")
# The most samples one command draws (`gantool eval --num` too); families may allow fewer.
MAX_NUM = 10_000_000
SEED_RANGE = (0, 2**64 - 1)  # what torch.Generator.manual_seed takes
INTERPOLATE_RANGE = (2, 1000)  # `gantool sample --interpolate`: a walk's points
# `gantool sample --truncation`: below it every sample is nearly G(0), and the redraws of
# gantool.nn.latent (which finish for it) would take thousands of rounds.
MIN_TRUNCATION = 0.01

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
  export  CHECKPOINT_OR_RUN_DIR --format onnx|pt2 --out FILE
                               the generator as an ONNX or torch.export file, for use
                               without gantool
  report  SWEEP_DIR [--sort METRIC] [--html]
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
            shell_completion(argv, list(COMMANDS), train)
        elif command in COMMANDS:
            COMMANDS[command](args)
        else:
            raise GantoolError(f"unknown command {command!r}: expected {', '.join(COMMANDS)}")
    except GantoolError as e:
        _exit(e)
    except KeyboardInterrupt:  # before or after training, whose own handler saves a checkpoint
        _exit(Interrupted("SIGINT: stopped", signal.SIGINT))


# Each command imports what it needs when it runs, so that `gantool --help` and bad arguments
# never wait for torch (2 s) or Hydra's app.
def train(args: list[str]) -> None:
    from gantool.app.job import run_train  # Hydra's app, and torch once a run starts

    run_train(args)


def resume(args: list[str]) -> None:
    if not args or args[0].startswith("-"):
        raise GantoolError("usage: gantool resume RUN_DIR [OVERRIDES]")
    from gantool.app.job import resume as resume_run  # Hydra's app and torch

    resume_run(Path(args[0]), args[1:])


def _device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        metavar="DEVICE",
        help="auto, cpu, cuda or mps (default auto)",
    )


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one `error:` line and exit 2, like every gantool error."""

    def error(self, message: str):
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
        "--best",
        action="store_true",
        help="the run folder's best checkpoint (checkpoints/best.pt: the best periodic "
        "evaluation, kept with trainer.eval_every) instead of its newest",
    )
    _device_argument(parser)
    return parser


def _parse_generator_args(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    """Parsed arguments, each checked before anything is loaded: out of range is one line."""
    opts = parser.parse_args(args)
    if opts.num is not None and not 1 <= opts.num <= MAX_NUM:
        parser.error(f"--num {opts.num}: must be from 1 to {MAX_NUM:,}")
    low, high = SEED_RANGE
    if not low <= opts.seed <= high:
        parser.error(f"--seed {opts.seed}: must be from {low} to 2^64-1")
    if opts.best:
        from gantool.training.run_folder import best_checkpoint  # no torch

        opts.path = str(best_checkpoint(opts.path))
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
        help="a conditional generator's class to draw, by index or name, like 3 or cat "
        "(default: every class in turn, one row of the grid each)",
    )
    parser.add_argument(
        "--interpolate",
        type=int,
        metavar="K",
        help="image datasets: a latent walk of K points (2 to 1,000) from each sample's noise "
        "to fresh noise (slerp; straight lines for uniform noise); --out .gif: one frame per "
        "point (default RUN_DIR/samples/walk_step_N.gif), .png: one row per walk (default 8 "
        "rows), .npy or .pt: the images (N, K, ...)",
    )
    parser.add_argument(
        "--truncation",
        type=float,
        metavar="T",
        help="redraw every noise value outside ±T (BigGAN's truncation; T from 0.01; normal "
        "noise only): typical samples, less variety",
    )
    opts = _parse_generator_args(parser, args)
    _check_walk_args(parser, opts)
    from gantool.app.sample import command  # torch: only once the arguments are good

    command(
        opts.path,
        opts.num,
        opts.out,
        opts.seed,
        opts.device,
        opts.label,
        opts.interpolate,
        opts.truncation,
    )


def _check_walk_args(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    """sample's --interpolate and --truncation in range, before torch is imported."""
    low, high = INTERPOLATE_RANGE
    if opts.interpolate is not None and not low <= opts.interpolate <= high:
        parser.error(f"--interpolate {opts.interpolate}: must be from {low} to {high:,}")
    if opts.truncation is not None and not MIN_TRUNCATION <= opts.truncation < math.inf:
        parser.error(f"--truncation {opts.truncation:g}: must be a number from {MIN_TRUNCATION}")


def report(args: list[str]) -> None:
    parser = _OneLineParser(
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
    parser.add_argument(
        "--html",
        action="store_true",
        help="also write SWEEP_DIR/report.html: one self-contained page with the table and a "
        "card per job (its samples, curves, numbers beside their floors), best objective first",
    )
    opts = parser.parse_args(args)
    from gantool.app.report import report as report_sweep  # JSON and YAML only: no torch

    write_page = None
    if opts.html:
        from gantool.app.report_html import write_page  # matplotlib, only when it draws
    report_sweep(opts.sweep_dir, opts.sort, write_page)


def evaluate(args: list[str]) -> None:
    parser = _generator_parser(
        "gantool eval",
        "Score a trained generator (its EMA when the run kept one): moments, KS and W1 for the "
        "Gaussian; FLD, precision, recall and class coverage for MNIST, beside real images and "
        "uniform noise; for image folders, SWD (and FID, KID, precision and recall given "
        "Inception weights) beside the same; for vectors, Fréchet distance, per-feature KS and "
        "W1, precision and recall beside real rows. Prints a table and writes "
        "RUN_DIR/eval.json (see --out).",
        "generated samples to score (default: trainer.num_eval_samples)",
    )
    parser.add_argument(
        "--data-root",
        help="MNIST: the folder holding MNIST/raw to score against (default: the run's "
        "dataset.root, a relative one taken from the folder the run was started in); vectors: "
        "the folder holding the data file (default: where the run's dataset.path points); "
        "images: the folder of images (default: the run's dataset.path)",
    )
    parser.add_argument(
        "--inception-weights",
        metavar="FILE",
        help="image folders: torch-fidelity's Inception weights, for FID, KID, precision and "
        "recall (default: the run's eval.inception_weights, else torch-fidelity's cached "
        "copy; nothing is downloaded)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the .json file to write (default: RUN_DIR/eval.json; for a checkpoint outside a "
        "run's checkpoints/ folder, STEM.eval.json beside it)",
    )
    opts = _parse_generator_args(parser, args)
    from gantool.app.evaluate import command  # torch: only once the arguments are good

    command(
        opts.path,
        opts.num,
        opts.seed,
        opts.device,
        opts.data_root,
        opts.out,
        inception_weights=opts.inception_weights,
    )


def export(args: list[str]) -> None:
    parser = _OneLineParser(
        prog="gantool export",
        description="Write a trained generator (its EMA when the run kept one) as a file that "
        "runs without gantool: latents (B, latent_dim), and class indices (B,) int64 for a "
        "conditional generator, in; samples in the data's units out (images (B, C, H, W) in "
        "[0, 1]). A metadata record goes beside it as FILE.json (and inside the file).",
    )
    parser.add_argument(
        "path", help="a checkpoint file, or a run folder (its newest checkpoint that loads)"
    )
    parser.add_argument(
        "--best",
        action="store_true",
        help="the run folder's best checkpoint (checkpoints/best.pt) instead of its newest",
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=("onnx", "pt2"),
        help="onnx: for ONNX Runtime (needs pip install 'gantool[export]'); pt2: for "
        "torch.export.load",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="the file to write: .onnx or .pt2, as --format"
    )
    opts = parser.parse_args(args)
    if opts.best:
        from gantool.training.run_folder import best_checkpoint  # no torch

        opts.path = str(best_checkpoint(opts.path))
    from gantool.app.export import command  # torch: only once the arguments are good

    command(opts.path, opts.format, opts.out)


def bench(args: list[str]) -> None:
    parser = _OneLineParser(
        prog="gantool bench",
        description="Measure training speed on this machine: MNIST throughput and FLOP "
        "utilisation against the textbook DataLoader loop, Gaussian time-to-quality, start-up. "
        "Prints a table and writes OUT/bench.json.",
    )
    parser.add_argument(
        "--out", type=Path, help="folder for bench.json and its runs (default outputs/bench/TIME)"
    )
    _device_argument(parser)
    parser.add_argument(
        "--mnist-root",
        default="data",
        help="dataset.root holding MNIST/raw (default data); random images if absent",
    )
    parser.add_argument("--steps", type=int, default=300, help="timed MNIST steps (default 300)")
    parser.add_argument(
        "--gaussian-seeds", type=int, default=5, help="Gaussian runs, 0 skips them (default 5)"
    )
    parser.add_argument(
        "--dcgan-steps",
        type=int,
        default=30,
        help="timed DCGAN steps on 28 px images beside pytorch/examples' loop, 0 skips them "
        "(default 30)",
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
    if opts.steps < 1 or min(opts.gaussian_seeds, opts.fidelity_seeds, opts.dcgan_steps) < 0:
        parser.error(
            "--steps must be >= 1, --gaussian-seeds, --fidelity-seeds and --dcgan-steps >= 0"
        )
    from gantool.app.bench import BenchOptions, command  # torch: only once the arguments are good

    out = opts.out or Path("outputs", "bench", time.strftime("%Y-%m-%d_%H-%M-%S"))
    command(
        BenchOptions(
            out=out,
            device=opts.device,
            mnist_root=opts.mnist_root,
            steps=opts.steps,
            gaussian_seeds=opts.gaussian_seeds,
            startup=not opts.no_startup,
            fidelity_seeds=opts.fidelity_seeds,
            dcgan_steps=opts.dcgan_steps,
        )
    )


COMMANDS = {
    "train": train,
    "resume": resume,
    "sample": sample,
    "eval": evaluate,
    "export": export,
    "report": report,
    "bench": bench,
}


def _version() -> str:
    try:
        return version("gantool")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return gantool.__version__


def _exit(error: GantoolError) -> None:
    from gantool.app.show import exit_with  # rich: not for `--help`

    exit_with(error)
