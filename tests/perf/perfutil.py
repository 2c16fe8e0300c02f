"""Helpers of the performance suites (imported by the test files as `perfutil`)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

SCALES = {"waterbirds": 4795, "celeba": 162770}  # training-split rows of the real datasets
DIM = 768  # CLIP ViT-L/14 features (ViT-B/32: 512)
ROWS: list[dict] = []  # the summary table, filled by the `record` fixture


def best_of(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def stream_seconds(x: torch.Tensor, rounds: int = 7) -> float:
    """The bandwidth bound: one pass of `x` through memory (a reduction reads every byte)."""
    return best_of(lambda: x.sum(), rounds)


class Split:
    """Features at benchmark scale: L2-normalised rows (as CLIP features are), 2 classes
    with a core and a spurious direction, 4 groups in Waterbirds' proportions."""

    def __init__(self, n: int, dim: int = DIM, seed: int = 0) -> None:
        from bench.data.store import FeatureSplit

        gen = torch.Generator().manual_seed(seed)
        y = (torch.rand(n, generator=gen) < 0.23).long()
        a = torch.where(torch.rand(n, generator=gen) < 0.95, y, 1 - y)
        x = torch.randn(n, dim, generator=gen)
        x[:, 0] += 2.0 * (2 * y - 1)
        x[:, 1] += 3.0 * (2 * a - 1)
        x = torch.nn.functional.normalize(x, dim=1)
        g = 2 * y + a
        masks = torch.stack([g == k for k in range(4)])
        self.split = FeatureSplit("train", x.contiguous(), y, a, g, masks, 2, 4)
        self.x = self.split.x
        self.group_names = [f"y={k // 2},a={k % 2}" for k in range(4)]
        self.prior = masks.sum(1).double() / n


def ratio_row(benchmark, bound_s: float, **extra: object) -> dict:  # noqa: ANN001
    """Best workload time against the bound, stored with the benchmark's JSON too."""
    best = benchmark.stats.stats.min
    info = {"bound_ms": round(bound_s * 1e3, 3), "best_ms": round(best * 1e3, 3),
            "ratio": round(best / bound_s, 2), **extra}
    benchmark.extra_info.update(info)
    return info




class WorkClock:
    """Exclusive time per kind of work: wrapped functions charge their own time to their
    kind (numeric, mlflow, optuna, ...), minus the time of wrapped calls inside them.
    Whatever no wrapped function covers is Python glue (rows, leaderboard, bookkeeping)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._stack: list[list] = []  # [kind, start of the current slice]

    def _charge(self, now: float) -> None:
        if self._stack:
            kind, since = self._stack[-1]
            self.totals[kind] = self.totals.get(kind, 0.0) + now - since

    def wrap(self, kind: str, fn: Callable) -> Callable:
        import functools

        @functools.wraps(fn)
        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            now = time.perf_counter()
            self._charge(now)
            self._stack.append([kind, now])
            try:
                return fn(*args, **kwargs)
            finally:
                end = time.perf_counter()
                self._charge(end)
                self._stack.pop()
                if self._stack:
                    self._stack[-1][1] = end

        return timed

    def install(self, monkeypatch, kind: str, owner: object, names: list[str]) -> None:  # noqa: ANN001
        for name in names:
            monkeypatch.setattr(owner, name, self.wrap(kind, getattr(owner, name)))
