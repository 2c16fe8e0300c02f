"""The method plugin contract: a class with a name, a search space, its label needs, and fit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from bench.tuning.space import Param

if TYPE_CHECKING:  # torch and the engine load when a method first trains, not at import
    import torch

    from bench.data.store import FeatureSplit, FeatureStore
    from bench.engine.heads import HeadFactory
    from bench.engine.predictor import Predictor
    from bench.engine.references import ReferenceStore
    from bench.engine.stages import Training
    from bench.engine.trainer import Trainer


FAMILIES = (
    "baseline", "reweighting", "robust optimisation", "group inference",
    "last-layer retraining", "CLIP-specific", "other",
)


class Method:
    """Base class for method plugins. Subclass, set the class attributes, implement fit.

    `group_labels` names the splits whose group labels the method itself uses
    (a subset of {"train", "val"}); the harness refuses to run it where they are withheld.
    `family` groups methods in `bench methods list` and docs/methods/README.md (one of
    FAMILIES). `reference_engine` says why a method's stages need the autograd reference
    engine (an arbitrary `loss`, a custom head); empty when the analytic engine trains it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    group_labels: ClassVar[frozenset[str]] = frozenset()
    paper: ClassVar[str] = ""
    family: ClassVar[str] = "other"
    reference_engine: ClassVar[str] = ""
    untuned_because: ClassVar[str] = ""
    needs_training_data: ClassVar[bool] = True

    def search_space(self) -> dict[str, Param]:
        return {}

    def unsupported(self, store: FeatureStore) -> str | None:
        """Why this method cannot run on `store` (e.g. no text tower), or None."""
        return None

    def train(self, train: FeatureSplit, val: FeatureSplit, ctx: Context) -> Training:
        """The method's training as stages (bench.Stage): yield each stage, receive its
        trained head, return the Predictor. The harness runs the stages, one
        configuration at a time or many at once; a method never writes its own loop."""
        raise NotImplementedError

    @classmethod
    def describes_stages(cls) -> bool:
        return cls.train is not Method.train

    def fit(self, train: FeatureSplit, val: FeatureSplit, ctx: Context) -> Predictor:
        """One configuration: the stages of `train` (a method with no training, such as
        zero-shot or a closed-form fit, overrides this instead)."""
        if not self.describes_stages():
            raise NotImplementedError(f"method '{self.name}' defines neither train nor fit")
        from bench.engine.stages import run_stages

        (out,) = run_stages(self, train, val, [ctx])
        if isinstance(out, Exception):
            raise out
        return out

    def fit_batched(
        self, train: FeatureSplit, val: FeatureSplit, ctxs: list[Context]
    ) -> list[Predictor | Exception]:
        """One result per context (other parameters or seeds), each equal to `fit`'s. A
        method described by stages trains them as one computation where it can; one
        that overrides `fit` is fitted one configuration after another. A configuration
        that fails (diverges, is pruned) is returned as its exception."""
        if self.describes_stages() and type(self).fit is Method.fit:
            from bench.engine.stages import run_stages

            return run_stages(self, train, val, ctxs)
        out: list[Predictor | Exception] = []
        for ctx in ctxs:
            try:
                out.append(self.fit(train, val, ctx))
            except Exception as exc:  # noqa: BLE001 - handed back per configuration
                out.append(exc)
        return out

    @classmethod
    def engine(cls) -> str:
        """Which engine trains the method, for `bench methods list`."""
        if cls.describes_stages() and cls.fit is Method.fit:
            return "stages (autograd)" if cls.reference_engine else "stages"
        return "own fit"


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
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("bench.plugins.method"))

    def make_head(self, kind: str | None = None) -> torch.nn.Module:
        """A fresh head: the run's kind (prompt where text embeddings exist, unless --head
        says otherwise), or `kind` ("linear") for a method whose mechanism needs one."""
        if kind is None:
            return self.heads.make(self.generator)
        from dataclasses import replace

        return replace(self.heads, kind=kind).make(self.generator)
