"""A Hydra callback that remembers where a sweep writes, so `gantool train -m` can say it."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class RememberSweepFolder(Callback):
    """Runs in the process that launches the sweep (also with the joblib launcher)."""

    folder: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        RememberSweepFolder.folder = str(config.hydra.sweep.dir)
