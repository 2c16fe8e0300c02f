"""Data-parallel passes over rows on CPU worker threads, one intra-op thread each.

Why: a full-batch gradient over cached features is a reduction over row blocks. With
MKL's own threading every block's matrix-vector product forks and joins its threads
and the products run at a fraction of the memory bandwidth (measured on 2 cores: one
fork-joined pass over a 160k × 768 matrix cost 3.7× the time of reading it once).
Giving each core its own contiguous run of blocks and its own partial sum, on one
thread each, overlaps one core's arithmetic with the other's reads: 2.0× on the same
machine. torch releases the GIL inside its operators, so plain threads suffice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _pool_of(size: int) -> ThreadPoolExecutor:
    """The process's worker pool, at least `size` threads. A smaller one is replaced,
    not shut down: a caller on another thread may still be using it."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < size:
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="bench-rows")
            _pool_size = size
        return _pool


def cpu_workers(device: torch.device) -> int:
    """How many row-parallel workers a pass on `device` uses: torch's intra-op thread
    count on a CPU (what the user allowed, e.g. with torch.set_num_threads), else 1."""
    return torch.get_num_threads() if device.type == "cpu" else 1


def split(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    """`items` cut into at most `parts` contiguous runs of near-equal length."""
    parts = max(1, min(parts, len(items)))
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + q + (i < r)
        out.append(items[start:end])
        start = end
    return out


@contextmanager
def one_thread() -> Iterator[None]:
    """The calling thread (and MKL, process-wide) on one intra-op thread, then back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _single_threaded(fn: Callable[[T], R]) -> Callable[[T], R]:
    def run(item: T) -> R:
        torch.set_num_threads(1)  # this worker's OpenMP setting; MKL's is process-wide
        return fn(item)
    return run


def parallel_map(fn: Callable[[T], R], chunks: Sequence[T]) -> list[R]:
    """fn over chunks, concurrently on worker threads with one intra-op thread each;
    results in the order of `chunks` (so reductions over them are deterministic)."""
    if len(chunks) <= 1:
        return [fn(c) for c in chunks]
    pool = _pool_of(len(chunks))
    with one_thread():
        return list(pool.map(_single_threaded(fn), chunks))
