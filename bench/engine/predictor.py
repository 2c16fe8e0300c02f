"""A trained model over features: what a method's fit returns and what metrics consume."""

from __future__ import annotations

import torch
from torch import nn


class Predictor:
    """Wraps a head module; evaluation is in eval mode, without grad, in large batches."""

    def __init__(
        self, module: nn.Module, batch_size: int = 65536, info: dict | None = None
    ) -> None:
        self.module = module
        self.batch_size = batch_size
        self.info = info or {}  # what a method wants inspected: error sets, weights, q

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.module.training
        self.module.eval()
        try:
            out = [
                self.module(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)
            ]
        finally:
            self.module.train(was_training)
        return torch.cat(out) if out else torch.empty(0)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(dim=1)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).softmax(dim=1)
