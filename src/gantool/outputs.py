"""The run folder's text outputs: the metrics log (JSON lines) and the summary."""

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
