"""Evaluation (predictions and every metric, bench.report.metrics.evaluate) against the bound."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from perfutil import DIM, ratio_row, stream_seconds

from bench.engine.heads import LinearHead, PromptHead
from bench.engine.predictor import Predictor
from bench.report.metrics import evaluate


@pytest.mark.parametrize("head", ["linear", "prompt"])
@pytest.mark.parametrize("scale", ["waterbirds", "celeba"])
def test_bench_evaluate(benchmark, scale_data, record, scale, head):
    data = scale_data(scale)
    gen = torch.Generator().manual_seed(0)
    module = (LinearHead(DIM, 2, gen) if head == "linear"
              else PromptHead(torch.randn(2, DIM, generator=gen), None, DIM, 100.0))
    store = SimpleNamespace(eval_group_names=data.group_names, n_classes=2,
                            train_eval_prior=data.prior)
    before = stream_seconds(data.x)
    benchmark.pedantic(evaluate, args=(Predictor(module.eval()), data.split, store),
                       rounds=5 if head == "linear" else 2, warmup_rounds=1)
    bound = min(before, stream_seconds(data.x))
    record(scale=scale, head=head, path="evaluate (all metrics)",
           **ratio_row(benchmark, bound, rows=len(data.split)))
