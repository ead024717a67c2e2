"""Quality watched during training: the periodic evaluation, the best checkpoint, early stop
and rollback (trainer.eval_every, patience, min_delta, max_rollbacks, rollback_lr_factor).

Every trainer.eval_every steps, at a log row, the dataset's own evaluation scores
trainer.num_periodic_eval_samples samples of the sampling generator (the EMA one where the run
keeps one) from noise seeded by trainer.seed alone: the same noise at every evaluation, so
that two evaluations differ only by the generator, and no RNG of the run moves. Its numbers
join that step's metrics row. Then:

- an objective better than the best so far by more than min_delta (lower, higher or nearer
  its target, as gantool.config.metrics says) makes this step the best: the loop saves a
  checkpoint at once and checkpoints/best.pt is linked to it;
- else the evaluation counts towards trainer.patience: that many in a row end the run early;
- else, if the dataset's collapse signal fires (COLLAPSE below), or at any time a loss is not
  finite, the run rolls back: the GAN's weights and optimizer states come from best.pt (or
  the newest checkpoint when there is no best yet), both learning rates become the config's
  times rollback_lr_factor ** rollbacks, and training goes on from the same step, data and
  RNG (the step counter does not go back). At most max_rollbacks times.

Everything this decides from is in its state_dict, which checkpoints carry: a resumed run
decides as the uninterrupted one would have.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from gantool.config.metrics import metric
from gantool.config.schema import Config
from gantool.nn.lenet import RECIPE
from gantool.runtime import distributed
from gantool.training import codec

log = logging.getLogger(__name__)

STD_FLOOR = 0.1  # the Gaussian's G has collapsed when its std is under this share of the target's
W1_CLOSE = 0.25  # ... and has come close when W1 is under this share of the target std

Seen = dict[str, list[float]]  # [lowest, highest] of each COLLAPSE key at earlier evaluations
Signal = Callable[[float, Seen, dict[str, float]], "str | None"]


def _came_close(seen: Seen, targets: dict[str, float]) -> bool:
    """Whether the 1-D G has come close to its target: W1 (the mean distance a sample must
    move) under W1_CLOSE target stds at an earlier evaluation. Until then it swings widely on
    its own and comes back (seed_gaussian's seed 2: W1 0.8, then 6, then 0.2 for good; seed 0:
    its std down to 0.11 at step 900, then on target): not a collapse, nor a divergence."""
    target = targets.get("eval/std")
    return target is not None and seen.get("eval/w1", [math.inf])[0] <= W1_CLOSE * target


def _std(value: float, seen: Seen, targets: dict[str, float]) -> str | None:
    """The 1-D Gaussian (and 1-D mixtures) collapsed: every sample near one point, a std near 0."""
    target = targets.get("eval/std")
    if _came_close(seen, targets) and value < STD_FLOOR * target:
        return f"G's std fell to {value:.3g}, under {STD_FLOOR:g} x the target's {target:g}"
    return None


def _w1(value: float, seen: Seen, targets: dict[str, float]) -> str | None:
    """The 1-D Gaussian (and 1-D mixtures) diverged: G came close and has left by more than the
    target std. What the 50-line GAN's failing seeds do: G's mean runs off to -65, or sticks
    at 6.7 while D gives up."""
    target = targets.get("eval/std")
    if _came_close(seen, targets) and value > target:
        low = seen["eval/w1"][0]
        return f"W1 rose to {value:.3g}, over the target's std {target:g}, from {low:.3g}"
    return None


def _classes(value: float, seen: Seen, targets: dict[str, float]) -> str | None:
    """The MNIST family: mode collapse shows as classes the LeNet no longer finds."""
    high = seen.get("eval/num_classes_covered", [0, 0])[1]
    if value < high / 2:
        return f"classes covered fell to {value:g} from {high:g}"
    return None


def _modes(value: float, seen: Seen, targets: dict[str, float]) -> str | None:
    """Gaussian mixtures: a collapsing G drops modes, down to one (the ring's 8 to 3, the
    grid's 25 to 12, or any number to 1)."""
    high = seen.get("eval/modes", [0, 0])[1]
    if value < high / 2 or value <= 1 < high:
        return f"modes captured fell to {value:g} from {high:g}"
    return None


# Each family's collapse signal, by the eval keys that carry it: (value now, the lowest and
# highest of each key at earlier evaluations, the family's targets) -> why it fired, or None.
# A family whose keys hold none of these rolls back on non-finite losses only.
COLLAPSE: dict[str, Signal] = {
    "eval/std": _std,
    "eval/w1": _w1,
    "eval/num_classes_covered": _classes,
    "eval/modes": _modes,
}


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Watch:
    """The quality of one run between its steps: the best evaluation so far, the evaluations
    since, the rollbacks, and an early stop once decided. `review` runs at every log row."""

    def __init__(self, cfg: Config, targets: dict[str, float]):
        self.cfg, self.t = cfg, cfg.trainer
        self.objective = self.t.objective
        self.better = metric(self.objective).better
        self.targets = targets
        self.best_step: int | None = None
        self.best_value: float | None = None
        self.evals_since_best = 0
        self.seen: dict[str, list[float]] = {}  # [lowest, highest] of each COLLAPSE key
        self.rollbacks: list[dict] = []  # {"step", "to_step", "reason", "lr_scale"}
        self.pending: dict = {}  # rollback/* keys for the next metrics row
        self.stopped: str | None = None  # why the run stopped early
        self.improved = False  # the last evaluation was the new best (the loop saves it)
        self.num_evals, self.eval_seconds = 0, 0.0  # this process's, for the summary

    # --- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "best_step": self.best_step,
            "best_value": self.best_value,
            "evals_since_best": self.evals_since_best,
            "seen": {key: list(span) for key, span in self.seen.items()},
            "rollbacks": [dict(r) for r in self.rollbacks],
            "pending": dict(self.pending),
            "stopped": self.stopped,
        }

    def load_state_dict(self, state: dict | None) -> None:
        """A checkpoint's state; None (a checkpoint from before this existed): nothing seen."""
        state = state or {}
        self.best_step = state.get("best_step")
        self.best_value = state.get("best_value")
        self.evals_since_best = state.get("evals_since_best", 0)
        self.seen = {key: list(span) for key, span in state.get("seen", {}).items()}
        self.rollbacks = [dict(r) for r in state.get("rollbacks", [])]
        self.pending = dict(state.get("pending", {}))
        self.stopped = state.get("stopped")

    @property
    def lr_scale(self) -> float:
        return self.t.rollback_lr_factor ** len(self.rollbacks)

    def summary(self) -> dict:
        """What summary.json says of the run's watched quality."""
        return {
            "best": {"step": self.best_step, "name": self.objective, "value": self.best_value},
            "stopped_early": self.stopped,
            "rollbacks": self.rollbacks,
            "num_evaluations": self.num_evals,
            "eval_seconds": round(self.eval_seconds, 3),
        }

    # --- at a log row ----------------------------------------------------------------------------
    def review(self, run, row: dict) -> None:
        """Roll back on a non-finite loss (or raise, with no rollback left); evaluate when due,
        into `row`, and judge the result. `run`: the loop's Run."""
        self.improved = False
        rolled_back = self.check_finite(run)
        if not rolled_back and self.t.eval_every and run.step % self.t.eval_every == 0:
            results = self.evaluate(run)
            # The numbers: a histogram or the classes' names stay in `gantool eval`'s JSON.
            row.update({k: v for k, v in results.items() if _is_number(v)})
            self.judge(run, row)
        row.update(self.pending)
        self.pending = {}

    def check_finite(self, run) -> bool:
        """Roll back (or raise, with no rollback left) if a loss was not finite since the last
        check; whether it rolled back. A host sync: at log rows and checkpoints only."""
        bad = int(run.nonfinite_step)
        if bad >= 0:
            self.roll_back(run, f"a loss was not finite at step {bad}")
        return bad >= 0

    def evaluate(self, run) -> dict:
        """The dataset's evaluation of the sampling generator, on rank 0 (the others get its
        numbers): noise of its own, so the run's RNG does not move."""
        started = time.perf_counter()
        gan, cfg, device = run.gan, run.cfg, run.device

        def score() -> dict:
            if gan.ema is not None:  # BatchNorm statistics of the EMA weights' own
                gan.calibrate_ema(cfg.model, device)
            num, seed = self.t.num_periodic_eval_samples, self.t.seed
            # Not under no_grad: an image set's first evaluation trains its LeNet.
            return run.family.evaluate(cfg, gan.sampler, device, num, seed, RECIPE)

        results = distributed.from_main(score)
        self.num_evals += 1
        self.eval_seconds += time.perf_counter() - started
        return results

    def judge(self, run, results: dict) -> None:
        """Best, patience, collapse: in that order (a new best is never a collapse)."""
        value = results.get(self.objective)
        if self.improves(value):
            self.best_step, self.best_value = run.step, value
            self.evals_since_best, self.improved = 0, True
        else:
            self.evals_since_best += 1
        collapse = None if self.improved else self.collapse(results)
        for key in COLLAPSE.keys() & results.keys():
            low, high = self.seen.get(key, (math.inf, -math.inf))
            self.seen[key] = [min(low, results[key]), max(high, results[key])]
        self.say(run.step, value)
        if collapse and self.t.max_rollbacks:
            rollbacks = len(self.rollbacks)
            self.roll_back(run, collapse)
            if len(self.rollbacks) > rollbacks:
                return
        if self.t.patience and self.evals_since_best >= self.t.patience:
            self.stopped = (
                f"{self.objective} did not improve by more than "
                f"trainer.min_delta={self.t.min_delta:g} in {self.evals_since_best} evaluations "
                f"(trainer.patience={self.t.patience}); best at step {self.best_step}"
            )
            log.info("Step %d: early stop: %s", run.step, self.stopped)

    def improves(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return self.distance(value) < self.distance(self.best_value) - self.t.min_delta

    def distance(self, value: float) -> float:
        """How far from perfect: lower is better for every objective."""
        if self.better == "higher":
            return -value
        target = self.targets.get(self.objective)
        if self.better == "target" and target is not None:
            return abs(value - target)
        return value

    def collapse(self, results: dict) -> str | None:
        """Why the family's collapse signal fires now, or None."""
        for key, signal in COLLAPSE.items():
            if key in results and math.isfinite(results[key]):
                why = signal(results[key], self.seen, self.targets)
                if why:
                    return why
        return None

    def say(self, step: int, value: float | None) -> None:
        """One line per evaluation, beside the progress line: the objective and the best."""
        shown = math.nan if value is None else value
        if self.improved:
            best = "the best so far"
        else:
            best = f"best {self.best_value:.4g} at step {self.best_step}"
            if self.t.patience:
                best += f"; {self.evals_since_best} of {self.t.patience} without improvement"
        log.info("step %d  %s %.4g  (%s)", step, self.objective, shown, best)

    # --- rollback --------------------------------------------------------------------------------
    def roll_back(self, run, reason: str) -> None:
        """Back to best.pt (else the newest checkpoint) with smaller learning rates; without a
        rollback left, or anything to go back to, a non-finite loss ends the run as before."""
        if len(self.rollbacks) >= self.t.max_rollbacks:
            run.check_finite()  # raises where a loss was not finite
            log.warning("Step %d: %s (no rollback left)", run.step, reason)
            return
        # Rank 0's files: the other processes get its checkpoint (or its None).
        path = distributed.from_main(lambda: run.checkpoints.rollback_target(self.best_step))
        if path is None:
            run.check_finite()
            log.warning("Step %d: %s; nothing to roll back to", run.step, reason)
            return
        ckpt = distributed.from_main(lambda: codec.load(path, run.device))
        run.gan.load_state_dict(ckpt.gan)
        self.rollbacks.append({"step": run.step, "to_step": ckpt.step, "reason": reason})
        scale = self.lr_scale
        self.rollbacks[-1]["lr_scale"] = scale
        gan, lrs = run.gan, (self.cfg.optimizer.g.lr, self.cfg.optimizer.d.lr)
        for optimizer, lr in zip((gan.g_optimizer, gan.d_optimizer), lrs, strict=True):
            for group in optimizer.param_groups:
                group["lr"] = lr * scale
        run.nonfinite_step.fill_(-1)
        if run.graph is not None:  # new optimizer state and learning rates: capture anew
            run.graph.recapture()
        self.evals_since_best = 0
        self.pending = {
            "rollback/count": len(self.rollbacks),
            "rollback/to_step": ckpt.step,
            "rollback/lr_scale": scale,
        }
        log.warning(
            "Step %d: %s; rolled back to step %d (%s), learning rates x%g (rollback %d of %d)",
            run.step,
            reason,
            ckpt.step,
            path.name,
            scale,
            len(self.rollbacks),
            self.t.max_rollbacks,
        )
