"""One training epoch of a head on cached features, against the streaming bound.

`autograd` is Trainer.fit(engine="autograd") (autograd and torch.optim: what methods
with a custom loss use, and what every method used before plain heads were routed
through the analytic path); `batched` is bench.fit_batched with one configuration
(blocked analytic gradient, vectorised update), which Trainer.fit now uses for plain
heads. K = 16 compares 16 configurations (different lr and weight decay) trained as one
batch with the same 16 trained one after another.
"""

from __future__ import annotations

import pytest
import torch
from perfutil import DIM, best_of, ratio_row, stream_seconds

import bench
from bench.engine.heads import LinearHead, PromptHead
from bench.engine.trainer import TrainConfig, Trainer

CPU = torch.device("cpu")
TEXT_DIM = 768


def _linear(seed: int = 0) -> tuple[torch.nn.Module, Trainer]:
    gen = torch.Generator().manual_seed(seed)
    return LinearHead(DIM, 2, gen), Trainer(CPU, gen)


def _prompt(seed: int = 0) -> tuple[torch.nn.Module, Trainer]:
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(2, TEXT_DIM, generator=torch.Generator().manual_seed(99))
    proj = torch.eye(TEXT_DIM, DIM)
    return PromptHead(text, proj, DIM, 100.0), Trainer(CPU, gen)


MAKERS = {"linear": _linear, "prompt": _prompt}


def _fit(path: str, make, data, cfgs: list[TrainConfig]) -> None:  # noqa: ANN001
    pairs = [make() for _ in cfgs]
    if path == "autograd":
        for (head, trainer), cfg in zip(pairs, cfgs, strict=True):
            trainer.fit(head, data, cfg, report=False, engine="autograd")
    else:
        bench.fit_batched([h for h, _ in pairs], data, cfgs, [t for _, t in pairs],
                          report=False)


@pytest.mark.parametrize("path", ["autograd", "batched"])
@pytest.mark.parametrize("batch", ["256", "1024", "full"])
@pytest.mark.parametrize("scale", ["waterbirds", "celeba"])
def test_bench_linear_epoch(benchmark, scale_data, record, scale, batch, path):
    data = scale_data(scale)
    n = len(data.split)
    cfg = TrainConfig(epochs=1, batch_size=n if batch == "full" else int(batch))
    before = stream_seconds(data.x)
    rounds = 2 if scale == "celeba" and path == "autograd" else 5
    benchmark.pedantic(_fit, args=(path, _linear, data.split, [cfg]), rounds=rounds,
                       warmup_rounds=1)
    bound = min(before, stream_seconds(data.x))
    record(scale=scale, head="linear", batch=batch, path=path,
           **ratio_row(benchmark, bound, rows=n))


@pytest.mark.parametrize("path", ["autograd", "batched"])
@pytest.mark.parametrize("scale", ["waterbirds", "celeba"])
def test_bench_prompt_epoch(benchmark, scale_data, record, scale, path):
    """The prompt head is a D×D' product per row: compute-bound, not bandwidth-bound."""
    data = scale_data(scale)
    cfg = TrainConfig(epochs=1, batch_size=256)
    before = stream_seconds(data.x)
    rounds = 1 if scale == "celeba" else 3
    benchmark.pedantic(_fit, args=(path, _prompt, data.split, [cfg]), rounds=rounds,
                       warmup_rounds=0 if scale == "celeba" else 1)
    bound = min(before, stream_seconds(data.x))
    record(scale=scale, head="prompt", batch="256", path=path,
           **ratio_row(benchmark, bound, rows=len(data.split)))


K = 16


def _configs() -> list[TrainConfig]:
    """16 tuning-like configurations: lr and weight decay on log grids, 1 epoch."""
    return [TrainConfig(epochs=1, batch_size=256, lr=10 ** (-3 + 2 * (k % 4) / 3),
                        weight_decay=10 ** (-6 + 5 * (k // 4) / 3)) for k in range(K)]


@pytest.mark.parametrize("head", ["linear", "prompt"])
@pytest.mark.parametrize("scale", ["waterbirds", "celeba"])
def test_bench_k16(benchmark, scale_data, record, scale, head):
    """K = 16 batched against 16 sequential Trainer.fit runs (and 16 sequential K = 1
    batched runs). At CelebA scale the 16 sequential runs are 16 × the best single run."""
    if scale == "celeba" and head == "prompt":
        pytest.skip("16 prompt heads at CelebA scale: minutes of pure compute on 2 cores; "
                    "the prompt head is compute-bound, so Waterbirds scale shows the ratio")
    data = scale_data(scale)
    make = MAKERS[head]
    cfgs = _configs()
    before = stream_seconds(data.x)
    big = scale == "celeba"
    benchmark.pedantic(_fit, args=("batched", make, data.split, cfgs), rounds=2 if big else 3,
                       warmup_rounds=0 if big else 1)
    batched_s = benchmark.stats.stats.min
    if big:
        seq_s = K * best_of(lambda: _fit("autograd", make, data.split, cfgs[:1]), 2)
        seq_fast_s = K * best_of(lambda: _fit("batched", make, data.split, cfgs[:1]), 2)
    else:
        seq_s = best_of(lambda: [_fit("autograd", make, data.split, [c]) for c in cfgs], 1)
        seq_fast_s = best_of(lambda: [_fit("batched", make, data.split, [c]) for c in cfgs], 1)
    bound = min(before, stream_seconds(data.x))
    row = ratio_row(
        benchmark, bound, rows=len(data.split), k=K,
        sequential_autograd_ms=round(seq_s * 1e3, 1),
        speedup_vs_autograd=round(seq_s / batched_s, 1),
        speedup_vs_sequential_batched=round(seq_fast_s / batched_s, 1),
        ratio_per_config=round(batched_s / K / bound, 2),
        sequential="16 x best single run" if big else "measured",
    )
    record(scale=scale, head=head, batch="256", path=f"batched K={K}", **row)
