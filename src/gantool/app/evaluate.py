"""`gantool eval`: score a trained generator and write the results as JSON.

Each dataset family scores its own samples (gantool.datasets): the Gaussian's moments, KS and
W1; MNIST's FLD, precision, recall and class coverage beside real images and noise; the
mixtures' modes; the user's vectors' distances beside real rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from gantool.app.sample import check_not_owned, check_out, out_of_memory_as_error
from gantool.app.show import print_eval
from gantool.core.console import console
from gantool.core.files import write_file
from gantool.datasets.registry import evaluate, family
from gantool.training.trained import Trained, load_generator


def command(
    path: str,
    num: int | None,
    seed: int,
    device_name: str,
    data_root: str | None,
    out: Path | None,
    inception_weights: str | None = None,
) -> None:
    """`gantool eval`: score, print the table, and say what was written."""
    trained, results, written = evaluate_checkpoint(
        path, num, seed, device_name, data_root, out, inception_weights
    )
    show = {"highlight": False, "soft_wrap": True, "markup": False}
    console.print(f"{trained.checkpoint} (step {trained.step})", **show)
    ds = trained.config.dataset
    print_eval(results, family(ds).targets(ds))
    console.print(f"Wrote {written}", **show)


def evaluate_checkpoint(
    path: str | Path,
    num: int | None,
    seed: int,
    device_name: str,
    data_root: str | None = None,
    out: Path | None = None,
    inception_weights: str | None = None,
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
    if inception_weights is not None:  # image folders' FID and KID (gantool.nn.fidelity)
        cfg.eval.inception_weights = inception_weights
    if out is None:
        run_dir = trained.run_dir
        out = run_dir / "eval.json" if run_dir else trained.beside_checkpoint("eval.json")
    check_not_owned(out, trained)
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
