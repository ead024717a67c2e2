"""The real-against-real floor, written once: how the image sets and the user's vectors split
their real data so that a generated set's numbers can be read beside the same numbers for
real data.

The real rows are shuffled (seeded) and cut into two disjoint halves: the reference and the
floor set. Generated samples, the floor set (and, where asked, as many uniform-noise rows in
[-1, 1]) are each compared with the same reference, n against n, so the numbers share their
finite-sample bias and a generator that matched the data exactly would score the floor on
average. Hence n = min(num, half the real rows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from gantool.core.errors import GantoolError

log = logging.getLogger(__name__)

PR_K = 3  # neighbours behind each manifold ball, as in Kynkäänniemi et al. 2019
PR_MAX_SAMPLES = 10_000  # precision and recall use at most this many points of each set
MIN_ROWS = 2 * (PR_K + 1)  # two halves, each with more than k points


@dataclass
class Halves:
    n: int  # rows in each set
    reference: torch.Tensor  # (n, F)
    floor: torch.Tensor  # (n, F), disjoint from the reference
    noise: torch.Tensor | None  # (n, F) uniform in [-1, 1), when asked for

    @property
    def num_pr(self) -> int:
        """How many leading rows of each set precision and recall use."""
        return min(self.n, PR_MAX_SAMPLES)


def split(
    real: torch.Tensor, num: int, seed: int, source: str, noun: str, noise: bool = False
) -> Halves:
    """The reference and floor halves of `real` (N, F) for scoring `num` samples; `source`
    names the data and `noun` its rows in messages ("the 10000 real images", "rows in
    data.csv"). Too few rows for precision and recall is one line."""
    n = min(num, len(real) // 2)
    if n <= PR_K:
        raise GantoolError(
            f"{source} has {len(real)} {noun}: evaluation needs at least {MIN_ROWS} "
            "(trainer.eval_at_end=false skips it at the end of a run)"
        )
    if n < num:
        log.info(
            "Scoring %d generated samples, not %d: each set is compared with a reference half "
            "of the %d %s of %s",
            n,
            num,
            len(real),
            noun,
            source,
        )
    draws = torch.Generator().manual_seed(seed)  # the halves, then the noise
    order = torch.randperm(len(real), generator=draws)
    uniform = torch.rand((n, real.shape[1]), generator=draws) * 2 - 1 if noise else None
    return Halves(n, real[order[:n]], real[order[n : 2 * n]], uniform)


def check_finite(fake: torch.Tensor) -> None:
    if not torch.isfinite(fake).all():
        raise GantoolError("the generator's samples are not finite (NaN or inf): nothing to score")
