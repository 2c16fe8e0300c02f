"""Group DRO's batch rule: the CPU (NumPy) update is the torch update."""

from __future__ import annotations

import torch

from bench.engine.group_dro_rule import GroupDRORule


def test_numpy_update_equals_torch_update():
    gen = torch.Generator().manual_seed(0)
    g = torch.randint(0, 5, (1000,), generator=gen)
    fast = GroupDRORule(g, 5, eta=0.3, adjustment=1.0)
    ref = GroupDRORule(g, 5, eta=0.3, adjustment=1.0)
    ref._cpu = False  # the torch path, as on CUDA
    for _ in range(200):
        idx = torch.randperm(1000, generator=gen)[:64]
        ce = torch.rand(64, generator=gen) * 3
        a, b = fast.scale(ce, idx), ref.scale(ce, idx)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast.q, ref.q, rtol=1e-5, atol=1e-7)
    assert float(fast.q.max() - fast.q.min()) > 0.01  # q moved away from uniform
