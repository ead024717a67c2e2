"""The loggers a run writes to besides metrics.jsonl, as `logger=...` names them.

- tensorboard: RUN_DIR/tensorboard/.
- mlflow: an MLflow run in MLFLOW_TRACKING_URI, else in the local file store `mlruns/` of the
  folder named `outputs` that holds the run folder (Hydra's default root), else beside the run
  folder (beside the sweep folder, for a sweep's job). A sweep's jobs are runs of one
  experiment named after the sweep folder; single runs go to the experiment `gantool`.
- wandb: a W&B run whose files go into RUN_DIR/wandb/; offline unless the environment sets
  WANDB_MODE, or WANDB_API_KEY (then online).

MLflow and W&B are optional extras (`pip install 'gantool[mlflow]'`, `'gantool[wandb]'`),
imported only when chosen.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from gantool.config.compose import flatten, to_dict
from gantool.config.schema import Config
from gantool.core.errors import ConfigError, GantoolError, first_line
from gantool.training.loop import OpenLoggers
from gantool.training.run_folder import Logger, RunFolder

log = logging.getLogger(__name__)

# logger=NAME -> (the module it imports, the extra that installs it)
EXTRAS = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
SINGLE_RUNS_EXPERIMENT = "gantool"  # MLflow's experiment (W&B's group) of runs outside sweeps
MAX_PARAM_LENGTH = 500  # MLflow 2's limit on a param's value
MAX_BATCH = 100  # params per MLflow log_batch call


def check_installed(name: str) -> None:
    """Refuse, in one line and before anything is written, a logger whose package is missing.
    Reads no module: find_spec only looks for it, so the check costs nothing."""
    if name not in EXTRAS:
        return
    module, extra = EXTRAS[name]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"logger={name} needs the {module} package: pip install 'gantool[{extra}]'"
        )


def opener(cfg: Config) -> OpenLoggers:
    """What the training loop calls, once it knows the run folder and its first step, to open
    the loggers cfg.logger names (MLflow and W&B also record the whole config)."""
    check_installed(cfg.logger.name)

    def open_loggers(run_dir: Path, start_step: int) -> Sequence[Logger]:
        name = cfg.logger.name
        if name == "tensorboard":
            return [TensorBoardLog(run_dir / "tensorboard", start_step)]
        if name == "mlflow":
            return [MlflowLog(run_dir, cfg)]
        if name == "wandb":
            return [WandbLog(run_dir, cfg)]
        return []

    return open_loggers


class TensorBoardLog:
    """``tensorboard/`` (logger=tensorboard): the logged scalars and each sample picture."""

    def __init__(self, folder: Path, start_step: int):
        # Only here: torch's TensorBoard writer takes 2 s to import.
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run drops what was logged after its checkpoint, as metrics.jsonl does.
        self.writer = SummaryWriter(str(folder), purge_step=start_step + 1 if start_step else None)

    def scalars(self, step: int, values: dict) -> None:
        for key, value in values.items():
            if key != "step" and isinstance(value, int | float):
                self.writer.add_scalar(key, value, step)

    def picture(self, step: int, png: bytes) -> None:
        """A sample picture (PNG bytes, as written to samples/) under the tag `samples`."""
        image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))  # (H, W, 3)
        self.writer.add_image("samples", image, step, dataformats="HWC")

    def flush(self) -> None:
        """Everything so far to disk: at each checkpoint, so a resumed run, which logs again
        from its checkpoint on, leaves no gap."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# --- where a run's records go outside its folder ---------------------------------------------
def sweep_folder(run_dir: Path) -> Path | None:
    """The sweep folder a job's run folder sits in (Hydra wrote multirun.yaml there when the
    sweep started), or None for a single run. Read from disk, so a resumed job finds it too."""
    parent = Path(os.path.abspath(run_dir)).parent
    return parent if (parent / "multirun.yaml").is_file() else None


def outputs_root(run_dir: Path) -> Path:
    """The folder whose `mlruns/` holds the run's MLflow records: the nearest folder named
    `outputs` above the run folder (Hydra's default root, so that every run and sweep started
    in one place shares one store), else the folder holding the run folder, or, for a job,
    the sweep folder."""
    run_dir = Path(os.path.abspath(run_dir))
    for folder in run_dir.parents:
        if folder.name == "outputs":
            return folder
    return (sweep_folder(run_dir) or run_dir).parent


def experiment_name(run_dir: Path) -> str:
    """A sweep's jobs share an experiment named after the sweep folder, as a path below the
    store's root (`multirun/2026-12-05/10-00-00-4242`); the name is stable over resumes and
    distinct per sweep. Runs outside sweeps share `gantool`."""
    sweep = sweep_folder(run_dir)
    if sweep is None:
        return SINGLE_RUNS_EXPERIMENT
    root = outputs_root(run_dir)
    return str(sweep.relative_to(root)) if sweep.is_relative_to(root) else str(sweep)


def run_name(run_dir: Path) -> str:
    """The run folder as a path below the store's root (`2026-12-05/10-00-00-4242`)."""
    run_dir = Path(os.path.abspath(run_dir))
    root = outputs_root(run_dir)
    return str(run_dir.relative_to(root)) if run_dir.is_relative_to(root) else str(run_dir)


def numbers(values: dict) -> dict[str, float]:
    """The loggable numbers of a metrics row or evaluation (`step` is the step itself)."""
    return {k: float(v) for k, v in values.items() if k != "step" and isinstance(v, int | float)}


def config_params(cfg: Config) -> dict[str, str]:
    """The flattened config ({"trainer.steps": "4000"}), as MLflow params and W&B's config."""
    return {k: str(v)[:MAX_PARAM_LENGTH] for k, v in flatten(to_dict(cfg)).items()}


# --- MLflow -----------------------------------------------------------------------------------
class MlflowLog:
    """logger=mlflow: the config as params, each metrics row's numbers by step, and at the end
    the sample pictures, plots and summary.json as artifacts. A resumed run continues its
    MLflow run (found by its tag gantool.run_dir); rows between its checkpoint and where it
    stopped are logged again, with the same values (resume is exact)."""

    TAG = "gantool.run_dir"

    def __init__(self, run_dir: Path, cfg: Config):
        mlflow = _import_mlflow()
        from mlflow.tracking import MlflowClient  # optional: the mlflow extra

        self.folder = RunFolder(run_dir)
        self.entities = mlflow.entities
        uri = None  # MLflow reads MLFLOW_TRACKING_URI itself
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # MLflow 3 keeps its file store only for those who ask for it.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (outputs_root(run_dir) / "mlruns").as_uri()
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id = self._start(run_dir, cfg)
        except mlflow.exceptions.MlflowException as e:
            raise GantoolError(f"logger=mlflow: {first_line(e.message)}") from e
        log.info(
            "MLflow: run %s of experiment %s in %s",
            self.run_id,
            experiment_name(run_dir),
            self.client.tracking_uri,
        )

    def _start(self, run_dir: Path, cfg: Config) -> str:
        """The run's MLflow run id: its earlier one when it resumes, else a new one."""
        path = str(Path(os.path.abspath(run_dir)))
        experiment_id = self._experiment(experiment_name(run_dir))
        params = config_params(cfg)
        for run in self.client.search_runs([experiment_id], max_results=50_000):
            if run.data.tags.get(self.TAG) == path:
                self.client.update_run(run.info.run_id, status="RUNNING")
                # A param cannot change; what a resume overrode is kept as a tag.
                changed = {
                    f"resumed.{k}": v for k, v in params.items() if run.data.params.get(k) != v
                }
                for key, value in changed.items():
                    self.client.set_tag(run.info.run_id, key, value)
                return run.info.run_id
        run = self.client.create_run(
            experiment_id, run_name=run_name(run_dir), tags={self.TAG: path}
        )
        items = [self.entities.Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), MAX_BATCH):
            self.client.log_batch(run.info.run_id, params=items[start : start + MAX_BATCH])
        return run.info.run_id

    def _experiment(self, name: str) -> str:
        """The experiment's id, made if new (by a parallel job first, perhaps)."""
        from mlflow.exceptions import MlflowException  # optional: the mlflow extra

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def scalars(self, step: int, values: dict) -> None:
        now = int(time.time() * 1000)
        metrics = [self.entities.Metric(k, v, now, step) for k, v in numbers(values).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def picture(self, step: int, png: bytes) -> None:
        """Nothing yet: samples/ goes up whole at the end, one artifact per picture."""

    def flush(self) -> None:
        """Nothing: each call above has written its records already."""

    def close(self) -> None:
        """The pictures and records of the run folder as artifacts, and the run finished."""
        for folder in (self.folder.samples, self.folder.plots):
            if folder.is_dir():
                self.client.log_artifacts(self.run_id, str(folder), folder.name)
        if self.folder.summary.is_file():
            self.client.log_artifact(self.run_id, str(self.folder.summary))
        self.client.set_terminated(self.run_id, "FINISHED")


def _import_mlflow():
    """The mlflow module (2 s to import: only for logger=mlflow), or one line naming the extra."""
    try:
        import mlflow  # optional (the mlflow extra), and 2 s to import
    except ImportError as e:
        raise GantoolError(
            f"logger=mlflow needs the mlflow package ({first_line(e)}): "
            "pip install 'gantool[mlflow]'"
        ) from e
    return mlflow


# --- Weights & Biases -------------------------------------------------------------------------
def wandb_mode() -> str | None:
    """Offline unless the environment says otherwise: WANDB_MODE as set (W&B reads it itself:
    None), else online where WANDB_API_KEY is set, else offline. `wandb login` alone keeps
    runs offline: its key lives in ~/.netrc, and a run should not upload unasked."""
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbLog:
    """logger=wandb: a W&B run with its files in RUN_DIR/wandb/: the flattened config, each
    metrics row's numbers by step, each sample picture at its step (key `samples`), and at the
    end summary.json's record in the run's summary. The project is WANDB_PROJECT, else
    `gantool`; a sweep's jobs are one group named after the sweep folder. A resumed run keeps
    its W&B id (read from the names W&B gave its folders in RUN_DIR/wandb/)."""

    def __init__(self, run_dir: Path, cfg: Config):
        try:
            import wandb  # optional (the wandb extra), and 1 s to import
        except ImportError as e:
            raise GantoolError(
                f"logger=wandb needs the wandb package ({first_line(e)}): "
                "pip install 'gantool[wandb]'"
            ) from e
        self.wandb = wandb
        self.folder = RunFolder(run_dir)
        files = run_dir / "wandb"  # W&B writes into DIR/wandb/
        files.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                dir=str(run_dir),
                mode=wandb_mode(),
                project=os.environ.get("WANDB_PROJECT") or "gantool",
                id=earlier_wandb_id(files),  # None: W&B makes one
                resume="allow",
                name=run_name(run_dir),
                group=experiment_name(run_dir),
                config=config_params(cfg),
                settings=wandb.Settings(console="off", silent=True),
            )
        except wandb.errors.Error as e:
            raise GantoolError(f"logger=wandb: {first_line(e)}") from e
        if self.run.settings.mode == "offline":  # W&B's own lines are silenced
            where = Path(self.run.dir).parent  # RUN_DIR/wandb/offline-run-DATE_TIME-ID
            log.info("W&B: offline run %s; upload it with `wandb sync %s`", self.run.id, where)

    def scalars(self, step: int, values: dict) -> None:
        if row := numbers(values):
            self.run.log(row, step=step)

    def picture(self, step: int, png: bytes) -> None:
        self.run.log({"samples": self.wandb.Image(Image.open(io.BytesIO(png)))}, step=step)

    def flush(self) -> None:
        """Nothing: W&B's own process writes as it goes."""

    def close(self) -> None:
        """summary.json's record into the run's summary (its file stays out of wandb/, where
        `gantool report` would take it for a job's), and the run finished."""
        if self.folder.summary.is_file():
            record = json.loads(self.folder.summary.read_text())
            self.run.summary.update({"gantool": record})
        self.run.finish()


def earlier_wandb_id(files: Path) -> str | None:
    """The id of the W&B run an earlier process of this run logged to: W&B names its folders
    `offline-run-DATE_TIME-ID` or `run-DATE_TIME-ID`."""
    names = [p.name.split("run-", 1)[1] for p in files.glob("*run-*-*") if p.is_dir()]
    return max(names).rsplit("-", 1)[1] if names else None  # DATE_TIME-ID: the newest
