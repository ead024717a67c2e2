"""A finite training set read in epochs: what every finite dataset's stream is made of."""

from __future__ import annotations

import torch


class Epochs:
    """Batches of a fixed set of rows (N, F) on the training device, reshuffled every epoch.

    Each epoch is a permutation drawn from `generator`, the stream's own, so the data order does
    not depend on how much noise G draws and survives resume exactly. The last partial batch of
    an epoch is dropped.
    """

    def __init__(self, rows: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.rows = rows  # (N, F)
        self.batch_size = batch_size
        self.generator = generator
        self.batches_per_epoch = len(rows) // batch_size
        self.epoch_size = len(rows)
        self.epoch, self.position = 0, 0
        self.order = self._shuffle()

    def _shuffle(self) -> torch.Tensor:
        return torch.randperm(len(self.rows), generator=self.generator).to(self.rows.device)

    def next_indices(self) -> torch.Tensor:
        """The rows of the next batch (B,), turning the epoch when too few are left."""
        if self.position + self.batch_size > len(self.order):
            self.epoch, self.position = self.epoch + 1, 0
            self.order = self._shuffle()
        idx = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return idx

    def next_batch(self) -> torch.Tensor:
        return self.rows.index_select(0, self.next_indices())  # (B, F)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "position": self.position,
            "order": self.order.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.position = state["epoch"], state["position"]
        self.order = state["order"].to(self.rows.device)
