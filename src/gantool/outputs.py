"""The run folder's logs: metrics (JSON lines), the summary, and TensorBoard events."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """``metrics.jsonl``: one JSON object per log interval, keyed like ``train/d_loss``."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step`: a resumed run logs those steps again."""
        if self.path.exists():
            kept = [r for r in self.rows() if r["step"] <= step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


class TensorBoardLog:
    """``tensorboard/`` (logger=tensorboard): the logged scalars, each sample grid as an
    image and, for the Gaussian, each sample set as a histogram."""

    def __init__(self, folder: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when asked for

        # A resumed run drops what was logged after its checkpoint, as metrics.jsonl does.
        self.writer = SummaryWriter(str(folder), purge_step=start_step + 1 if start_step else None)

    def scalars(self, step: int, values: dict) -> None:
        for key, value in values.items():
            if key != "step" and isinstance(value, int | float):
                self.writer.add_scalar(key, value, step)

    def samples(self, step: int, samples, images: bool) -> None:
        """samples (N, data_dim) in the model's range: [-1, 1] images, or 1-D values."""
        if images:
            grid = (samples.reshape(-1, 1, 28, 28).clamp(-1, 1) + 1) / 2  # (N, 1, 28, 28)
            self.writer.add_images("samples", grid, step)
        else:
            self.writer.add_histogram("samples", samples[:, 0], step)

    def flush(self) -> None:
        """Everything so far to disk: at each checkpoint, so a resumed run, which logs again
        from its checkpoint on, leaves no gap."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
