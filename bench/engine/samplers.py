"""Device-side batch samplers: an epoch is a list of index tensors drawn on the device.

No Python work per example: uniform batches come from one randperm, group-balanced and
weighted batches from one torch.multinomial over per-example probabilities.
"""

from __future__ import annotations

import torch


def group_balanced_weights(g: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per-example weight 1/n_g, so every group carries the same total."""
    counts = torch.bincount(g, minlength=n_groups).to(torch.float32)
    return 1.0 / counts.clamp_min(1)[g]


class Sampler:
    """Draws one epoch of batch indices. `weights=None` means uniform without replacement;
    `pool` (from `upsampled`) is a fixed multiset of indices shuffled every epoch."""

    def __init__(
        self, n: int, batch_size: int, weights: torch.Tensor | None = None,
        pool: torch.Tensor | None = None,
    ) -> None:
        self.n = n
        self.pool = pool
        self.batch_size = max(1, min(batch_size, self.epoch_length))
        self.weights = None if weights is None else weights.to(torch.float32)

    @property
    def epoch_length(self) -> int:
        """Examples per epoch: n, or the size of the duplicated pool."""
        return self.n if self.pool is None else len(self.pool)

    @classmethod
    def upsampled(cls, copies: torch.Tensor, batch_size: int) -> Sampler:
        """Example i appears copies[i] times in every epoch, shuffled without replacement:
        a dataset with duplicated rows, as JTT's reference code builds it (an epoch is
        Σ copies long, not n)."""
        idx = torch.arange(len(copies), device=copies.device)
        pool = idx.repeat_interleave(copies.to(torch.long).clamp_min(0))
        return cls(len(copies), batch_size, pool=pool)

    @classmethod
    def uniform(cls, n: int, batch_size: int) -> Sampler:
        return cls(n, batch_size)

    @classmethod
    def group_balanced(cls, g: torch.Tensor, n_groups: int, batch_size: int) -> Sampler:
        return cls(len(g), batch_size, group_balanced_weights(g, n_groups))

    @classmethod
    def weighted(cls, weights: torch.Tensor, batch_size: int) -> Sampler:
        return cls(len(weights), batch_size, weights)

    def epoch(self, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
        if self.pool is not None:
            perm = torch.randperm(len(self.pool), generator=generator, device="cpu")
            order = self.pool.cpu()[perm].to(device)
        elif self.weights is None:
            order = torch.randperm(self.n, generator=generator, device="cpu").to(device)
        else:
            # one epoch = n draws with replacement, in proportion to the weights
            order = torch.multinomial(
                self.weights.cpu(), self.n, replacement=True, generator=generator
            ).to(device)
        return list(order.split(self.batch_size))
