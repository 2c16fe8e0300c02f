"""Seeds derived from names, so adding a method or a parameter never shifts another's seed;
and the seed protocol of a run.

Seed streams (a result depends only on method, data, budget and seed):
- tuning trials of sweep replicate r all train with seed TUNING_SEED_BASE + r (common
  random numbers: trials differ only in their parameters, so selection compares
  parameters, not seed luck);
- final seeds of replicate r are seed_offset + r·S … seed_offset + (r+1)·S − 1 (S = --seeds),
  all below TUNING_SEED_BASE: a final seed never repeats the realization a trial selected.
"""

from __future__ import annotations

import hashlib

import torch

TUNING_SEED_BASE = 1_000_000_000


def derive_seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts: object) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(*parts))
    return g


def tuning_seed(replicate: int) -> int:
    """The seed every tuning trial of a sweep replicate trains with."""
    return TUNING_SEED_BASE + replicate


def final_seeds(seed_offset: int, seeds: int, replicate: int) -> list[int]:
    """The final seeds of a sweep replicate: disjoint across replicates and from tuning."""
    start = seed_offset + replicate * seeds
    return list(range(start, start + seeds))
