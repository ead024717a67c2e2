"""Every `eval/*` number gantool writes: how it reads, which way is better, and the numbers it
is shown beside. Plain data, so that `gantool report` ranks runs without importing torch.

A key means the same thing in every dataset family that gives it; each family's schema lists
the keys its evaluation gives (`eval_keys` in datasets.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    label: str  # how the key reads in tables
    # "lower" or "higher" is better; "target": nearest the dataset's target value is best
    # (the moments of a 1-D target, whose value each run's summary records).
    better: str = "lower"
    floor: str | None = None  # the same number for real data against real data
    noise: str | None = None  # ... and for uniform noise
    score: bool = True  # False: it describes the evaluation rather than scores a generator


METRICS: dict[str, Metric] = {
    # the 1-D Gaussian, and 1-D mixtures
    "eval/mean": Metric("mean", "target"),
    "eval/std": Metric("std", "target"),
    "eval/skewness": Metric("skewness", "target"),
    "eval/excess_kurtosis": Metric("excess kurtosis", "target"),
    "eval/ks": Metric("KS statistic"),
    "eval/w1": Metric("W1 distance"),
    # MNIST-format images, in the LeNet's feature space
    "eval/fld": Metric("FLD ↓", floor="eval/fld_real_floor", noise="eval/fld_noise"),
    "eval/precision": Metric(
        "precision ↑", "higher", floor="eval/precision_real", noise="eval/precision_noise"
    ),
    "eval/recall": Metric(
        "recall ↑", "higher", floor="eval/recall_real", noise="eval/recall_noise"
    ),
    "eval/class_kl": Metric("class KL from uniform ↓"),
    "eval/num_classes_covered": Metric("classes with ≥ 5% of samples ↑", "higher"),
    # a conditional G: the LeNet's accuracy on held-out real images is its ceiling
    "eval/conditional_accuracy": Metric(
        "classified as asked ↑", "higher", floor="eval/classifier_accuracy"
    ),
    # any image set (the user's folders): no pretrained network, or torch-fidelity's Inception
    "eval/swd": Metric("SWD x 1e3 ↓", floor="eval/swd_real_floor", noise="eval/swd_noise"),
    "eval/fid": Metric("FID ↓", floor="eval/fid_real_floor", noise="eval/fid_noise"),
    "eval/kid": Metric("KID ↓", floor="eval/kid_real_floor", noise="eval/kid_noise"),
    # Gaussian mixtures (PacGAN's mode metrics)
    "eval/modes": Metric("modes captured ↑", "higher"),
    "eval/high_quality_percent": Metric("% high quality ↑", "higher"),
    "eval/reverse_kl": Metric("reverse KL ↓"),
    # the user's vectors: real rows against real rows, no noise point
    "eval/fd": Metric("Fréchet distance ↓", floor="eval/fd_real_floor"),
    "eval/ks_mean": Metric("KS, mean over features ↓", floor="eval/ks_mean_real_floor"),
    "eval/ks_max": Metric("KS, largest of the features ↓", floor="eval/ks_max_real_floor"),
    "eval/w1_mean": Metric("W1 / std, mean over features ↓", floor="eval/w1_mean_real_floor"),
    # what the evaluation was measured with, beside what it measured
    "eval/num_samples": Metric("samples scored", "higher", score=False),
    "eval/classifier_accuracy": Metric("LeNet held-out accuracy", "higher", score=False),
    "eval/fld_real_floor": Metric("FLD, real against real", score=False),
    "eval/fld_noise": Metric("FLD, noise", score=False),
    "eval/precision_real": Metric("precision, real", "higher", score=False),
    "eval/recall_real": Metric("recall, real", "higher", score=False),
    "eval/precision_noise": Metric("precision, noise", "higher", score=False),
    "eval/recall_noise": Metric("recall, noise", "higher", score=False),
    "eval/swd_real_floor": Metric("SWD, real against real", score=False),
    "eval/swd_noise": Metric("SWD, noise", score=False),
    "eval/fid_real_floor": Metric("FID, real against real", score=False),
    "eval/fid_noise": Metric("FID, noise", score=False),
    "eval/kid_real_floor": Metric("KID, real against real", score=False),
    "eval/kid_noise": Metric("KID, noise", score=False),
    "eval/fd_real_floor": Metric("Fréchet distance, real against real", score=False),
    "eval/ks_mean_real_floor": Metric("KS mean, real against real", score=False),
    "eval/ks_max_real_floor": Metric("KS max, real against real", score=False),
    "eval/w1_mean_real_floor": Metric("W1 mean, real against real", score=False),
}

HIGHER_IS_BETTER = frozenset(key for key, m in METRICS.items() if m.better == "higher")
TARGETED = tuple(key for key, m in METRICS.items() if m.better == "target")


def metric(key: str) -> Metric:
    """The key's entry; a key gantool does not know reads as its name, lower is better."""
    return METRICS.get(key) or Metric(key.removeprefix("eval/"))
