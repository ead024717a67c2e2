"""A trained generator, from a checkpoint file or a run folder: what `gantool sample` and
`gantool eval` use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gantool.config.schema import Config
from gantool.core.errors import GantoolError, first_line
from gantool.datasets.registry import family, to_config
from gantool.nn import nets
from gantool.runtime.device import resolve_device
from gantool.training.checkpointer import resolve, run_of
from gantool.training.run_folder import RunFolder


@dataclass
class Trained:
    """A checkpoint's generator, ready to sample from, with where it came from."""

    checkpoint: Path
    run: RunFolder | None  # None for a loose checkpoint, outside a run's checkpoints/ folder
    step: int
    config: Config
    generator: torch.nn.Module  # the EMA generator when the run kept one
    device: torch.device
    started_in: Path | None  # the folder the run was started in (None: not recorded)

    @property
    def run_dir(self) -> Path | None:
        return self.run.path if self.run else None

    def beside_checkpoint(self, name: str) -> Path:
        """Where a loose checkpoint's outputs go: its folder, under the checkpoint's stem."""
        return self.checkpoint.with_name(f"{self.checkpoint.stem}.{name}")


def load_generator(path: str | Path, device_name: str) -> Trained:
    """The generator of a checkpoint file, or of a run folder's newest checkpoint that loads.

    Reads only: a damaged newer checkpoint in a run folder is skipped with a warning, not
    renamed as resume renames it.
    """
    device = resolve_device(device_name)
    path, ckpt = resolve(path)
    try:
        cfg = to_config(ckpt.config)
    except GantoolError as e:
        raise GantoolError(f"{path}: its config is not one this gantool reads: {e}") from e
    G = nets.generator(cfg.model, family(cfg.dataset).sample_shape(cfg.dataset))
    try:
        G.load_state_dict(ckpt.generator_state())
    except (RuntimeError, KeyError, TypeError) as e:
        raise GantoolError(f"{path}: its generator does not fit its config: {first_line(e)}") from e
    run = run_of(path)
    started_in = Path(ckpt.started_in) if ckpt.started_in else run and run.recorded_cwd()
    return Trained(path, run, ckpt.step, cfg, G.to(device), device, started_in)
