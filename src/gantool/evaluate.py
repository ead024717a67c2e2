"""How good a generator is, per dataset, as a flat dict of `eval/*` numbers.

Gaussian: the generated samples' moments, KS statistic and 1-Wasserstein distance to the
target. MNIST: Fréchet LeNet Distance, precision and recall in the features of a LeNet that
gantool trains on the real data (see lenet.py), and the spread of predicted digits, with two
calibration points measured the same way: real images against other real images (the floor)
and uniform noise (a far point).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch

from gantool import lenet
from gantool.config import Config, GaussianConfig
from gantool.data.mnist import load_mnist, to_model_range
from gantool.errors import GantoolError
from gantool.metrics import (
    class_coverage,
    frechet_gaussians,
    gaussian_fit,
    gaussian_report,
    precision_recall,
)
from gantool.models import generate, sample_latent
from gantool.sampling import (
    Trained,
    check_out,
    load_generator,
    out_of_memory_as_error,
    write_file,
)

log = logging.getLogger(__name__)

PR_MAX_SAMPLES = 10_000  # precision and recall use at most this many points of each set
PR_K = 3  # neighbours behind each manifold ball, as in Kynkäänniemi et al. 2019


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
    if isinstance(cfg.dataset, GaussianConfig):
        result = _evaluate_gaussian(cfg, generator, device, num, seed)
    else:
        result = _evaluate_mnist(cfg, generator, device, num, seed, recipe)
    log.info(
        "Evaluated %d samples in %.1f s", result["eval/num_samples"], time.perf_counter() - started
    )
    return result


def _latent(cfg: Config, num: int, device: torch.device, seed: int) -> torch.Tensor:
    return sample_latent(num, cfg.model, device, torch.Generator(device).manual_seed(seed))


def _evaluate_gaussian(
    cfg: Config, generator: torch.nn.Module, device: torch.device, num: int, seed: int
) -> dict:
    """Moments, KS and W1 of `num` generated values; the targets are cfg.dataset's mean and
    std, 0 skewness and excess kurtosis, and 0 KS and W1."""
    samples = generate(generator, _latent(cfg, num, device, seed)).cpu()  # (num, 1)
    report = gaussian_report(samples, cfg.dataset.mean, cfg.dataset.std)
    return {"eval/num_samples": num, **{f"eval/{k}": v["generated"] for k, v in report.items()}}


def _evaluate_mnist(
    cfg: Config,
    generator: torch.nn.Module,
    device: torch.device,
    num: int,
    seed: int,
    recipe: lenet.Recipe,
) -> dict:
    """FLD, precision, recall and class coverage of generated digits, with calibration.

    The configured split's real images are shuffled (seeded) and cut into two disjoint
    halves: the reference and the floor set. Generated samples, the floor set and as many
    uniform-noise images in [-1, 1] are each compared with the same reference, n against n,
    so the three numbers share their finite-sample bias (FLD's grows like 1/n) and a
    generator that matched the data exactly would score the floor on average. Hence
    n = min(num, half the real images): 5,000 at most on the test split, 30,000 on train.
    Precision and recall use the first min(n, 10,000) points of each set. The floor is
    higher than what an n-vs-N comparison against all real images would give.
    """
    images, _ = load_mnist(cfg.dataset)
    real = to_model_range(images)  # (N, 784)
    n = min(num, len(real) // 2)
    if n <= PR_K:
        raise GantoolError(
            f"the MNIST {cfg.dataset.split} split has {len(real)} images: evaluation needs "
            f"at least {2 * (PR_K + 1)}"
        )
    if n < num:
        log.info(
            "Scoring %d generated samples, not %d: each set is compared with a reference "
            "half of the %d real images",
            n,
            num,
            len(real),
        )
    classifier = lenet.load_classifier(cfg.dataset.root, device, recipe)

    draws = torch.Generator().manual_seed(seed)  # the halves and the noise
    order = torch.randperm(len(real), generator=draws)
    reference, floor = real[order[:n]], real[order[n : 2 * n]]
    noise = torch.rand((n, real.shape[1]), generator=draws) * 2 - 1  # (n, 784) in [-1, 1)
    fake = generate(generator, _latent(cfg, n, device, seed))  # (n, 784)
    if not torch.isfinite(fake).all():
        raise GantoolError("the generator's samples are not finite (NaN or inf): nothing to score")

    ref_features, _ = classifier.embed(reference)  # (n, F)
    ref_fit = gaussian_fit(ref_features)
    m = min(n, PR_MAX_SAMPLES)

    def compare(images: torch.Tensor) -> tuple[float, float, float, torch.Tensor]:
        features, predicted = classifier.embed(images)
        fld = frechet_gaussians(*ref_fit, *gaussian_fit(features))
        precision, recall = precision_recall(ref_features[:m], features[:m], k=PR_K)
        return fld, precision, recall, predicted

    fld, precision, recall, predicted = compare(fake)
    histogram, kl, num_covered = class_coverage(predicted, lenet.NUM_CLASSES)
    fld_floor, precision_real, recall_real, _ = compare(floor)
    fld_noise, precision_noise, recall_noise, _ = compare(noise)
    return {
        "eval/num_samples": n,
        "eval/fld": fld,
        "eval/precision": precision,
        "eval/recall": recall,
        "eval/class_kl": kl,
        "eval/num_classes_covered": num_covered,
        "eval/class_histogram": histogram,
        "eval/fld_real_floor": fld_floor,
        "eval/precision_real": precision_real,
        "eval/recall_real": recall_real,
        "eval/fld_noise": fld_noise,
        "eval/precision_noise": precision_noise,
        "eval/recall_noise": recall_noise,
        "eval/classifier_accuracy": classifier.accuracy,
    }


def targets(cfg: Config) -> dict[str, float]:
    """What a perfect generator would score on the Gaussian's keys (empty for MNIST, whose
    numbers are read beside the real-image floor and the noise point instead)."""
    if not isinstance(cfg.dataset, GaussianConfig):
        return {}
    perfect = {"eval/skewness": 0.0, "eval/excess_kurtosis": 0.0, "eval/ks": 0.0, "eval/w1": 0.0}
    return {"eval/mean": cfg.dataset.mean, "eval/std": cfg.dataset.std, **perfect}


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
    if not isinstance(cfg.dataset, GaussianConfig):
        cfg.dataset.root, cfg.dataset.download = _mnist_root(trained, data_root), False
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


def _mnist_root(trained: Trained, data_root: str | None) -> str:
    """The absolute MNIST root to score against, checked to hold the run's split."""
    from gantool.data.mnist import file_names, raw_folder, split_present

    ds = trained.config.dataset
    if data_root is not None:
        root, source = Path(os.path.abspath(data_root)), f"--data-root {data_root}"
    else:
        started_in = trained.started_in or Path.cwd()
        root = Path(os.path.abspath(started_in / ds.root))  # unchanged if absolute
        source = f"the run's dataset.root={ds.root}"
        if not Path(ds.root).is_absolute():
            source += (
                f", from {started_in} where the run was started"
                if trained.started_in is not None
                else ", from the current folder: the run did not record where it started"
            )
    if not split_present(root, ds.split):
        expected = " and ".join(n + "[.gz]" for n in file_names(ds.split))
        raise GantoolError(
            f"MNIST {ds.split} split not found in {raw_folder(root)} ({source}): expected "
            f"{expected}; pass --data-root ROOT, the folder that holds MNIST/raw"
        )
    return str(root)
