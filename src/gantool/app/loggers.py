"""The loggers a run writes to besides metrics.jsonl, as `logger=...` names them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from gantool.config.schema import LoggerConfig
from gantool.training.loop import OpenLoggers
from gantool.training.run_folder import Logger


def opener(cfg: LoggerConfig) -> OpenLoggers:
    """What the training loop calls, once it knows the run folder and its first step, to open
    the loggers `cfg` names."""

    def open_loggers(run_dir: Path, start_step: int) -> Sequence[Logger]:
        if cfg.name == "tensorboard":
            return [TensorBoardLog(run_dir / "tensorboard", start_step)]
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
