"""Quality watched during training (gantool.training.watch): the periodic evaluation leaves the
run's RNG alone, best.pt outlives keep-K, early stop comes at the right evaluation, and a
rollback resumes exactly."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from conftest import FAST, compose_config, equal_state, run_main
from gantool.app.job import train
from gantool.core.errors import ConfigError, NothingToDo
from gantool.core.files import MetricsLog
from gantool.datasets.gaussian import GAUSSIAN
from gantool.training import finish, watch
from gantool.training.checkpointer import latest_checkpoint, list_checkpoints
from gantool.training.codec import load as load_checkpoint
from gantool.training.loop import Run
from gantool.training.watch import COLLAPSE

# An evaluation every log row (FAST logs every 2 steps); no pictures, no end-of-run
# evaluation: what is tested here is the loop. With min_delta this large only the first
# evaluation improves: the best is step 2, and every later evaluation counts to patience.
WATCHED = [
    *FAST,
    "trainer.eval_every=2",
    "trainer.num_periodic_eval_samples=500",
    "trainer.sample_every=100",
    "trainer.eval_at_end=false",
]
NEVER_BETTER = "trainer.min_delta=1e9"


@pytest.fixture(autouse=True)
def no_end_of_run_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib's curves take a second a run; these tests read checkpoints and records."""
    monkeypatch.setattr(finish, "training_curves", lambda *args: b"")
    monkeypatch.setattr(finish, "progress_gif", lambda frames: b"")
    monkeypatch.setattr(type(GAUSSIAN), "plots", lambda self, rows, ds: {})
    monkeypatch.setattr(Run, "draw_samples", lambda self: None)  # the last step's histogram


def with_steps(cfg, steps: int):
    """`cfg` (composed once: composing takes longer than these runs) with another length."""
    cfg = copy.deepcopy(cfg)
    cfg.trainer.steps = steps
    return cfg


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_evaluating_moves_no_rng_of_the_run(tmp_path: Path) -> None:
    plain, watched = tmp_path / "plain", tmp_path / "watched"
    train(compose_config([*WATCHED, "trainer.eval_every=0"]), plain)
    train(compose_config(WATCHED), watched)
    a, b = (load_checkpoint(latest_checkpoint(d)) for d in (plain, watched))
    for part in a.gan:
        assert equal_state(a.gan[part], b.gan[part]), part
    assert equal_state(a.rng, b.rng) and equal_state(a.stream, b.stream)
    rows = MetricsLog(watched / "metrics.jsonl").rows()
    assert [r["step"] for r in rows if "eval/w1" in r] == [2, 4, 6]
    trained = [{k: v for k, v in r.items() if not k.startswith("eval/")} for r in rows]
    assert trained == MetricsLog(plain / "metrics.jsonl").rows()
    assert summary_of(watched)["num_evaluations"] == 3
    with pytest.raises(ConfigError, match=r"multiple of trainer\.log_every=2"):
        compose_config([*FAST, "trainer.eval_every=3"])


def test_best_checkpoint_outlives_keep_k(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(compose_config([*WATCHED, NEVER_BETTER, "trainer.keep_checkpoints=1"]), run)
    assert [p.name for p in list_checkpoints(run)] == ["step_0000006.pt"]
    assert load_checkpoint(run / "checkpoints" / "best.pt").step == 2
    best = summary_of(run)["best"]
    assert best["step"] == 2 and best["name"] == "eval/w1"
    assert best["value"] == MetricsLog(run / "metrics.jsonl").rows()[0]["eval/w1"]
    assert run_main("eval", run, "--best", "--num", "100", "--device", "cpu") == 0
    assert json.loads((run / "eval.json").read_text())["step"] == 2


def test_early_stop_at_the_patience_th_evaluation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = [*WATCHED, NEVER_BETTER, "trainer.steps=20", "trainer.patience=2"]
    cfg = compose_config(overrides)
    summary = train(with_steps(cfg, 20), run)
    # Evaluations at steps 2 (the best), 4 and 6: the second without improvement stops.
    assert summary["status"] == "completed" and summary["step"] == 6
    assert "in 2 evaluations" in summary["stopped_early"]
    assert summary["stopped_early"].endswith("best at step 2")
    assert latest_checkpoint(run).name == "step_0000006.pt"
    with pytest.raises(NothingToDo, match="stopped early at step 6"):
        train(with_steps(cfg, 20), run)


def test_collapse_signals_fire_on_a_fall() -> None:
    std, w1, classes, modes = (
        COLLAPSE[f"eval/{k}"] for k in ("std", "w1", "num_classes_covered", "modes")
    )
    gaussian, close, far = {"eval/std": 1.25}, {"eval/w1": [0.3, 2.0]}, {"eval/w1": [0.8, 6.0]}
    assert std(0.1, close, gaussian) and not std(0.2, close, gaussian)
    assert w1(2.0, close, gaussian) and not w1(1.0, close, gaussian)
    # Before G first comes close (W1 under a quarter of the target std) it swings on its own.
    assert not std(0.01, far, gaussian) and not w1(6.0, far, gaussian)
    assert classes(4, {"eval/num_classes_covered": [1, 10]}, {})
    assert not classes(5, {"eval/num_classes_covered": [1, 10]}, {})
    assert modes(1, {"eval/modes": [1, 3]}, {}) and not modes(2, {"eval/modes": [1, 3]}, {})
    assert modes(3, {"eval/modes": [1, 8]}, {}) and not modes(1, {"eval/modes": [1, 1]}, {})


def test_rollback_then_exact_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A signal that fires at every evaluation but the best (step 2): rollbacks to it at steps 4
    # and 6, halving the learning rates each time.
    monkeypatch.setattr(watch, "COLLAPSE", {"eval/w1": lambda *args: "a test"})
    base = [*WATCHED, NEVER_BETTER, "trainer.max_rollbacks=2"]
    full, split = tmp_path / "full", tmp_path / "split"
    cfg = compose_config(base)
    train(with_steps(cfg, 7), full)
    train(with_steps(cfg, 5), split)  # one rollback done
    train(with_steps(cfg, 7), split)
    a, b = (load_checkpoint(latest_checkpoint(d)) for d in (full, split))
    assert a.step == b.step == 7
    for part in a.gan:
        assert equal_state(a.gan[part], b.gan[part]), part
    assert equal_state(a.rng, b.rng) and a.watch == b.watch
    rows = MetricsLog(full / "metrics.jsonl").rows()
    assert rows == MetricsLog(split / "metrics.jsonl").rows()
    rolled = {r["step"]: r["rollback/lr_scale"] for r in rows if "rollback/count" in r}
    assert rolled == {4: 0.5, 6: 0.25}
    lr = cfg.optimizer.g.lr
    assert a.gan["g_optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr * 0.25)
    assert [r["to_step"] for r in summary_of(full)["rollbacks"]] == [2, 2]


def test_a_non_finite_loss_rolls_back_to_the_best(tmp_path: Path, monkeypatch) -> None:
    def losses_turn_nan_at_step_3(run) -> None:
        train_step(run)
        if run.step == 3:
            run.nonfinite_step.fill_(3)  # as Run.train_step records a NaN loss

    train_step = Run.train_step
    monkeypatch.setattr(Run, "train_step", losses_turn_nan_at_step_3)
    run = tmp_path / "run"
    summary = train(compose_config([*WATCHED, "trainer.max_rollbacks=1"]), run)
    # Step 3 is a checkpoint step: its save notices the loss and rolls back to best.pt.
    assert summary["step"] == 6
    assert summary["rollbacks"] == [
        {"step": 3, "to_step": 2, "reason": "a loss was not finite at step 3", "lr_scale": 0.5}
    ]
    row = next(r for r in MetricsLog(run / "metrics.jsonl").rows() if r["step"] == 4)
    assert row["rollback/count"] == 1 and row["rollback/to_step"] == 2
