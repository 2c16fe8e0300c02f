"""Reference models shared by every method in a run (JTT's identification model, SFR's
reference): trained once per (dataset, encoder, head, seed, settings), cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from bench.data.store import FeatureStore
from bench.engine.heads import HeadFactory
from bench.engine.predictor import Predictor
from bench.engine.trainer import TrainConfig, Trainer
from bench.tuning.seeding import generator


class ReferenceStore:
    def __init__(self, store: FeatureStore, heads: HeadFactory, cache_dir: Path | None) -> None:
        self._store = store  # the unguarded store: reference ERM heads need no group labels
        self.heads = heads
        self.cache_dir = cache_dir
        self._memo: dict[str, nn.Module] = {}
        self.trained = 0  # how many references this store actually trained (tests read it)

    def _key(self, seed: int, cfg: TrainConfig, head_kind: str) -> str:
        blob = json.dumps(
            [self._store.spec.fingerprint(), self._store.encoder_id, head_kind, seed, asdict(cfg)],
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def erm(
        self, seed: int, cfg: TrainConfig | None = None, head_kind: str | None = None
    ) -> Predictor:
        """An ERM head (mean cross-entropy) on the training split; cached by its settings."""
        cfg = cfg or TrainConfig()
        heads = (
            self.heads
            if head_kind is None
            else HeadFactory(**{**self.heads.__dict__, "kind": head_kind})
        )
        key = self._key(seed, cfg, heads.resolved_kind)
        if key in self._memo:
            return Predictor(self._memo[key])
        gen = generator("reference-erm", seed)
        head = heads.make(gen)
        path = self.cache_dir / f"erm-{key}.pt" if self.cache_dir else None
        if path is not None and path.exists():
            try:
                head.load_state_dict(
                    torch.load(path, map_location=self._store.device, weights_only=True)
                )
                self._memo[key] = head.eval()
                return Predictor(head)
            except Exception:  # corrupt or stale: rebuild, never trust
                path.unlink(missing_ok=True)
        Trainer(self._store.device, gen).fit(head, self._store.splits["train"], cfg, report=False)
        self.trained += 1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(head.state_dict(), tmp)
            os.replace(tmp, path)
        self._memo[key] = head
        return Predictor(head)

    def zeroshot(self) -> Predictor:
        """The untrained prompt head: CLIP's zero-shot classifier."""
        return Predictor(HeadFactory(**{**self.heads.__dict__, "kind": "prompt"}).make())
