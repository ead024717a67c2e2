"""Dataset families. Each module here owns one family's behaviour: its batch stream, the size
of a sample, how samples are drawn as a picture, its end-of-run plots and its evaluation;
its config schema (with its checks, metric keys and targets) is in config.py. Nothing outside
a family's own module asks which dataset a run uses: it calls `family(cfg.dataset)`.

Each stream has `data_dim`, `batch_size`, `batches_per_epoch` (None when endless),
`next_batch()` giving a (batch_size, data_dim) tensor in the model's range, and
`state_dict()` / `load_state_dict()`.
"""

from __future__ import annotations

from gantool.data import gaussian, mnist

FAMILIES = {"gaussian": gaussian.Gaussian, "mnist": mnist.Mnist}


def family(cfg):
    """The family of a dataset config (any schema in config.DATASET_SCHEMAS)."""
    return FAMILIES[cfg.name]


def build_data(cfg, batch_size: int, seed: int, device):
    return family(cfg).stream(cfg, batch_size, seed, device)


def data_dim(cfg) -> int:
    """The size of one flattened sample: what G outputs and D reads."""
    return family(cfg).data_dim


def check_available(cfg) -> None:
    """Before a run starts, refuse data that cannot be had (files absent, no download)."""
    family(cfg).check_available(cfg)


__all__ = ["FAMILIES", "build_data", "check_available", "data_dim", "family"]
