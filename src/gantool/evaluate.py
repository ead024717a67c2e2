"""How good a generator is, as a flat dict of `eval/*` numbers, and the `eval` command.

Each dataset family scores its own samples (gantool.data): the Gaussian's moments, KS and W1;
MNIST's FLD, precision, recall and class coverage beside real images and noise.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from gantool import lenet
from gantool.config import Config
from gantool.data import family
from gantool.errors import GantoolError
from gantool.models import sample_latent
from gantool.sampling import (
    Trained,
    check_out,
    load_generator,
    out_of_memory_as_error,
    write_file,
)

log = logging.getLogger(__name__)


def evaluate(
    cfg: Config,
    generator: torch.nn.Module,
    device: torch.device,
    num: int,
    seed: int = 0,
    recipe: lenet.Recipe = lenet.RECIPE,
) -> dict:
    """Score `num` samples of `generator` against cfg.dataset; a flat dict of JSON values.

    G's noise comes from torch.Generator(device).manual_seed(seed) and every other draw from
    generators of its own, so evaluating does not move the training RNG. `recipe` is the
    LeNet's (MNIST only); tests shrink it.
    """
    if num < 1:
        raise GantoolError(f"cannot evaluate on {num} samples: need at least 1")
    started = time.perf_counter()
    result = family(cfg.dataset).evaluate(cfg, generator, device, num, seed, recipe)
    log.info(
        "Evaluated %d samples in %.1f s", result["eval/num_samples"], time.perf_counter() - started
    )
    return result


def latent(cfg: Config, num: int, device: torch.device, seed: int) -> torch.Tensor:
    """The noise behind an evaluation: its own seeded generator, so no RNG of the run moves."""
    return sample_latent(num, cfg.model, device, torch.Generator(device).manual_seed(seed))


def evaluate_checkpoint(
    path: str | Path,
    num: int | None,
    seed: int,
    device_name: str,
    data_root: str | None = None,
    out: Path | None = None,
) -> tuple[Trained, dict, Path]:
    """`gantool eval`: score a checkpoint's generator and write the results as JSON.

    Returns the loaded generator, the results and the file written: `out`, else
    RUN_DIR/eval.json, else (a loose checkpoint, outside a run's checkpoints/ folder)
    STEM.eval.json beside it. `num` defaults to the run's trainer.num_eval_samples.

    MNIST is read where the run read it: a relative dataset.root is taken from the folder
    the run was started in. `data_root` replaces it (relative to the current folder).
    Nothing is downloaded and no folder is made for the data; missing files are one line.
    """
    if out is not None:
        check_out(out, (".json",), ".json", "eval.json")
    trained = load_generator(path, device_name)
    cfg = trained.config
    cfg.dataset = family(cfg.dataset).for_evaluation(cfg.dataset, trained.started_in, data_root)
    if out is None:
        run_dir = trained.run_dir
        out = run_dir / "eval.json" if run_dir else trained.beside_checkpoint("eval.json")
    num = num or cfg.trainer.num_eval_samples
    with out_of_memory_as_error(f"scoring {num:,} samples"):
        results = evaluate(cfg, trained.generator, trained.device, num, seed)
    objective = cfg.trainer.objective
    record = {
        "checkpoint": str(trained.checkpoint),
        "step": trained.step,
        "seed": seed,
        "eval": results,
        "objective": {"name": objective, "value": results.get(objective)},
    }
    write_file(out, (json.dumps(record, indent=2) + "\n").encode())
    return trained, results, out
