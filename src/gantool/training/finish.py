"""The end of a run: its pictures, its evaluation and its summary record."""

from __future__ import annotations

import dataclasses
import logging
import time

from gantool.datasets.registry import evaluate
from gantool.plots.training import progress_gif, training_curves
from gantool.runtime import distributed
from gantool.training.run_folder import Summary

log = logging.getLogger(__name__)

WATCHED = ("eval/", "rollback/")  # the keys a metrics row gains from training/watch.py


def finish(run, train_seconds: float, entered: float) -> dict:
    """Draw the end-of-run pictures, evaluate the final generator and write summary.json
    (rank 0); return the summary as a dict. `run` is the trainer's Run after its last step."""
    folder, cfg, t = run.folder, run.cfg, run.cfg.trainer
    if not run.main:
        return {"status": "completed", "run_dir": str(folder.path), "step": run.step}
    if (world := distributed.world_size()) > 1:
        log.info("All %d processes held the same weights at every checkpoint", world)
    rows = folder.rows()
    frames = folder.sample_pictures()
    if frames:
        folder.write_picture("progress.gif", progress_gif(frames))
    if rows:
        loss = run.settings.loss
        curves = training_curves(rows, loss.labels, loss.probabilities, loss.name)
        folder.write_picture("losses.png", curves)
        for name, picture in run.family.plots(rows, cfg.dataset).items():
            folder.write_picture(name, picture)
    results = (
        evaluate(cfg, run.gan.sampler, run.device, t.num_eval_samples) if t.eval_at_end else {}
    )
    summary = Summary(
        status="completed",
        run_dir=str(folder.path),
        step=run.step,
        first_step_time=time.time() - train_seconds,  # Unix time: before it is start-up
        train_seconds=train_seconds,
        wall_seconds=time.perf_counter() - entered,
        samples=str(folder.sample_image(run.step)),
        # The last row's training statistics (its periodic evaluation is `best`'s business).
        final={k: v for k, v in rows[-1].items() if not k.startswith(WATCHED)} if rows else {},
        eval=results,
        objective={"name": t.objective, "value": results.get(t.objective)},
        targets=run.family.targets(cfg.dataset),
        **run.watch.summary(),
    )
    folder.write_summary(summary)
    folder.close_logs(run.step, results)  # after summary.json: MLflow and W&B take it along
    return dataclasses.asdict(summary)
