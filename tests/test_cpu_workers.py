"""bench.engine.cpu_workers: contiguous splits, ordered results, one intra-op thread per worker."""

from __future__ import annotations

import threading

import pytest
import torch

from bench.engine.cpu_workers import cpu_workers, parallel_map, split


@pytest.mark.parametrize("n,parts", [(10, 3), (3, 5), (7, 1), (8, 4), (0, 2)])
def test_split_is_contiguous_and_balanced(n, parts):
    items = list(range(n))
    runs = split(items, parts)
    assert [i for r in runs for i in r] == items
    assert len(runs) == max(1, min(parts, n))
    assert max(map(len, runs)) - min(map(len, runs)) <= 1


def test_parallel_map_keeps_order_and_runs_on_single_threaded_workers():
    before = torch.get_num_threads()
    barrier = threading.Barrier(3, timeout=10)  # all three must run at the same time

    def work(i: int) -> tuple[int, str, int]:
        barrier.wait()
        return i * i, threading.current_thread().name, torch.get_num_threads()

    out = parallel_map(work, [0, 1, 2])
    assert [o[0] for o in out] == [0, 1, 4]
    assert len({o[1] for o in out}) == 3
    assert all(o[2] == 1 for o in out)
    assert torch.get_num_threads() == before  # the caller's setting comes back


def test_one_chunk_runs_in_the_caller():
    assert parallel_map(lambda c: threading.current_thread().name, ["a"]) == [
        threading.current_thread().name]


def test_workers_follow_torch_threads_on_cpu_only():
    assert cpu_workers(torch.device("cpu")) == torch.get_num_threads()
    assert cpu_workers(torch.device("cuda")) == 1
