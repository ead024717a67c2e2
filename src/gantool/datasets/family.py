"""What a dataset family is: the contract every family module fulfils.

A family is the behaviour behind one or more options of the `dataset` group: its schema (a
plain-data dataclass of gantool.config.datasets) says what the user sets; the family object
does everything that takes files, tensors or pictures. Nothing outside a family's own module
asks which dataset a run uses: code calls `family(cfg.dataset)` (registry.py) and uses what
the Family below provides.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from gantool.config.schema import Config


class Stream(Protocol):
    """The training batches of a dataset: rows in the model's range, on the training device."""

    data_dim: int  # the size of one flattened sample
    batch_size: int  # rows per batch
    batches_per_epoch: int | None  # None: endless
    epoch_size: int | None  # rows in one epoch (a finite set's size); None: endless

    def next_batch(self) -> torch.Tensor:
        """(batch_size, data_dim); with labels, (batch_size, data_dim + 1), the class last."""
        ...

    def state_dict(self) -> dict:
        """Everything needed to continue the stream exactly (its generator's state)."""
        ...

    def load_state_dict(self, state: dict) -> None: ...


class Family(ABC):
    """One family's behaviour. Subclasses set the class attributes and implement the abstract
    methods; the others have defaults that fit families with nothing to say there."""

    schema: ClassVar[type]  # its dataclass in gantool.config.datasets
    label: ClassVar[str]  # its name in messages, picture titles and log lines
    # `gantool sample --out`: the picture formats and the raw formats it writes, and how many
    # samples a command draws without --num.
    picture_formats: ClassVar[tuple[str, ...]]
    raw_formats: ClassVar[tuple[str, ...]]
    default_num: ClassVar[int]
    class_names: tuple[str, ...] = ()  # a labelled set's classes, in label order

    @property
    def name(self) -> str:
        """The option of the `dataset` group (`dataset=NAME`)."""
        return self.schema.name

    def names_of_classes(self, ds) -> tuple[str, ...]:
        """The class names of a labelled set, in label order (the user's image folders: their
        subfolders); () when unlabelled."""
        return self.class_names

    def describe(self, ds) -> str:
        """What a run trains on, in a few words, for its first log line."""
        return self.label

    # --- before a run --------------------------------------------------------------------------
    def complete(self, ds) -> None:
        """Fill in what the config leaves to the data, in place (the user's vectors record their
        features, means, stds and digest); raise GantoolError for data that cannot be trained
        on. Runs whenever a config is checked, a checkpoint's included."""
        return None

    def check_available(self, ds) -> None:
        """Before a run starts: refuse, in one line, data that cannot be had."""
        return None

    def epoch_size(self, ds) -> int | None:
        """The rows of a finite training set (files read for their size only), or None for
        an endless stream."""
        return None

    # --- training ------------------------------------------------------------------------------
    @abstractmethod
    def sample_shape(self, ds) -> tuple[int, ...]:
        """The shape of one sample: (D,) for vectors, (channels, height, width) for images."""

    def data_dim(self, ds) -> int:
        """The size of one flattened sample: what G outputs and D reads."""
        return math.prod(self.sample_shape(ds))

    @abstractmethod
    def stream(
        self, ds, batch_size: int, seed: int, device: torch.device, labels: bool = False
    ) -> Stream:
        """The training batches, from a generator of the stream's own seeded by `seed`; with
        `labels` (labelled sets), each row ends in its class, for a conditional model."""

    # --- results -------------------------------------------------------------------------------
    def targets(self, ds) -> dict[str, float]:
        """What a perfect generator would score, for the eval keys whose best is not simply the
        lowest or highest (the moments of a 1-D target), and the zeros of distances."""
        return {}

    @abstractmethod
    def evaluate(
        self, cfg: Config, generator: nn.Module, device: torch.device, num: int, seed: int, recipe
    ) -> dict[str, Any]:
        """`eval/*` numbers of `num` samples (cfg: the whole Config): eval/num_samples always,
        and every key of the schema's eval_keys. G's noise comes from `seed` alone, so no RNG
        of the run moves. `recipe`: the LeNet's, for the image sets (tests shrink it)."""

    def for_evaluation(self, ds, started_in: Path | None, data_root: str | None):
        """The dataset config as `gantool eval` reads it later, perhaps from another folder
        (`started_in`: where the run was started; `data_root`: --data-root)."""
        return ds

    # --- pictures and files --------------------------------------------------------------------
    @abstractmethod
    def picture(self, samples: torch.Tensor, ds, fmt: str, title: str, classes=None) -> bytes:
        """Samples (N, data_dim) drawn as a picture file (fmt: one of picture_formats); a
        labelled set draws them by `classes` (N,), a conditional generator's, when given."""

    @abstractmethod
    def values(self, samples: torch.Tensor, ds) -> torch.Tensor:
        """Samples (N, data_dim) as a .npy, .pt or .csv file holds them, in the data's units."""

    def columns(self, ds) -> list[str]:
        """A CSV file's header (families with .csv among raw_formats)."""
        raise NotImplementedError(f"{self.label} samples are not written as CSV")

    def max_num(self, fmt: str) -> int:
        """The most samples one file of this format holds."""
        return 10_000_000

    def plots(self, rows: list[dict], ds) -> dict[str, bytes]:
        """End-of-run pictures beyond the loss curves, by file name (rows: metrics.jsonl)."""
        return {}
