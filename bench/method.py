"""The method plugin contract: a class with a name, a search space, its label needs, and fit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from bench.space import Param

if TYPE_CHECKING:
    from bench.heads import HeadFactory
    from bench.predictor import Predictor
    from bench.references import ReferenceStore
    from bench.store import FeatureSplit, FeatureStore
    from bench.trainer import Trainer


class Method:
    """Base class for method plugins. Subclass, set the class attributes, implement fit.

    `group_labels` names the splits whose group labels the method itself uses
    (a subset of {"train", "val"}); the harness refuses to run it where they are withheld.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    group_labels: ClassVar[frozenset[str]] = frozenset()
    paper: ClassVar[str] = ""

    def search_space(self) -> dict[str, Param]:
        return {}

    def unsupported(self, store: FeatureStore) -> str | None:
        """Why this method cannot run on `store` (e.g. no text tower), or None."""
        return None

    def fit(self, train: FeatureSplit, val: FeatureSplit, ctx: Context) -> Predictor:
        raise NotImplementedError

    def fit_batched(
        self, train: FeatureSplit, val: FeatureSplit, ctxs: list[Context]
    ) -> list[Predictor | Exception]:
        """One fit per context (other parameters or seeds), each result equal to `fit`'s.

        Methods whose training is one Trainer stage with per-example weights override this
        with bench.fit_batched, which trains all configurations in one pass over the
        features. This default fits them one after another. A configuration that fails
        (diverges, is pruned) is returned as its exception, so the others still count.
        """
        out: list[Predictor | Exception] = []
        for ctx in ctxs:
            try:
                out.append(self.fit(train, val, ctx))
            except Exception as exc:  # noqa: BLE001 - handed back per configuration
                out.append(exc)
        return out


@dataclass
class Context:
    """Everything the harness lends a method for one fit: shared data, trainer, references."""

    params: dict[str, Any]
    seed: int
    device: torch.device
    generator: torch.Generator
    store: FeatureStore
    trainer: Trainer
    references: ReferenceStore
    heads: HeadFactory
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("bench.method"))

    def make_head(self) -> torch.nn.Module:
        """A fresh head (prompt head where text embeddings exist, unless --head says otherwise)."""
        return self.heads.make(self.generator)
