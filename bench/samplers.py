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
    """Draws one epoch of batch indices. `weights=None` means uniform without replacement."""

    def __init__(self, n: int, batch_size: int, weights: torch.Tensor | None = None) -> None:
        self.n = n
        self.batch_size = max(1, min(batch_size, n))
        self.weights = None if weights is None else weights.to(torch.float32)

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
        if self.weights is None:
            order = torch.randperm(self.n, generator=generator, device="cpu").to(device)
        else:
            # one epoch = n draws with replacement, in proportion to the weights
            order = torch.multinomial(
                self.weights.cpu(), self.n, replacement=True, generator=generator
            ).to(device)
        return list(order.split(self.batch_size))
