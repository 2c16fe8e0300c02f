"""Group DRO's online q as a batch rule (Sagawa et al. 2020), shared by every method that
runs Group DRO over some grouping: `groupdro` over the dataset's training groups, `eiil`
over the groups it infers. Public as bench.GroupDRORule."""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.engine.config import BatchRule


class GroupDRORule(BatchRule):
    """Group DRO's online q as a batch rule: weights q_g / n_g(batch) for a batch's rows,
    so Σ_i s_i·CE_i = Σ_g q_g ℓ_g; q persists across batches and epochs.

    Per batch, with ℓ_g the mean cross-entropy of the batch's rows in group g:
    q_g ← q_g · exp(η · (ℓ_g + C/√n_g)) for the groups present in the batch, q ← q / Σq.
    Groups absent from a batch keep their q.

    On the CPU the batch's group sums are two NumPy bincounts and the update of the few
    q values runs on Python floats: a dozen tiny torch operations cost ~75 µs of dispatch
    per batch (as much as the whole ERM step), NumPy on arrays of G values ~2.5 µs an
    operation, Python floats a fraction of that. The update is then in float64, the
    torch path's in float32: they differ in the last bits only. On CUDA it stays in torch
    (a round trip to the host would synchronise the device every batch)."""

    def __init__(self, g: torch.Tensor, n_groups: int, eta: float, adjustment: float) -> None:
        self.g = g
        self.n_groups = n_groups
        self.eta = eta
        counts = torch.bincount(g, minlength=n_groups).to(torch.float32)
        self.adjust = adjustment / counts.clamp_min(1).sqrt()
        self.log_q = torch.full((n_groups,), -math.log(n_groups), device=g.device)
        self._cpu = g.device.type == "cpu"
        if self._cpu:  # the few per-group numbers as Python floats (see the class docstring)
            self._g_np = g.numpy()
            self._adjust_f = [float(v) for v in self.adjust]
            self._log_q_f = [float(v) for v in self.log_q]

    @staticmethod
    def space() -> dict:
        """Group DRO's search space (training settings, strong L2, η, C, sampling), shared
        by every method that runs it (groupdro, eiil)."""
        from bench.tuning.space import Choice, Float, training_space

        space = training_space(weight_decay=1e-3)
        space["weight_decay"] = Float(1e-5, 1.0, 1e-3, log=True)
        space["eta"] = Float(1e-3, 1.0, 0.05, log=True)
        space["adjustment"] = Float(0.0, 5.0, 0.0)
        space["sampling"] = Choice(("uniform", "group"), "uniform", tune=False)
        return space

    @property
    def q(self) -> torch.Tensor:
        if self._cpu:
            return torch.tensor(self._log_q_f, dtype=torch.float32).softmax(0)
        return self.log_q.softmax(0)

    def scale(self, ce: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self._cpu and ce.dtype == torch.float32:
            return torch.from_numpy(self.scale_numpy(ce.numpy(), idx.numpy()))
        gb = self.g[idx]
        counts = torch.bincount(gb, minlength=self.n_groups).to(ce.dtype)
        sums = torch.zeros(self.n_groups, dtype=ce.dtype, device=ce.device).index_add_(0, gb, ce)
        group_loss = sums / counts.clamp_min(1)
        # the exponentiated update, kept in log space so it never overflows
        step = self.eta * (group_loss + self.adjust)
        self.log_q = torch.where(counts > 0, self.log_q + step, self.log_q).log_softmax(0)
        return (self.log_q.exp() / counts.clamp_min(1))[gb]

    def scale_numpy(self, ce: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if not self._cpu:
            return super().scale_numpy(ce, idx)
        gb = self._g_np[idx]
        n = self.n_groups
        counts = np.bincount(gb, minlength=n).tolist()
        sums = np.bincount(gb, weights=ce, minlength=n).tolist()
        lq = [q + self.eta * (s / c + a) if c else q
              for q, s, c, a in zip(self._log_q_f, sums, counts, self._adjust_f, strict=True)]
        top = max(lq)
        lse = top + math.log(sum(math.exp(q - top) for q in lq))
        self._log_q_f = [q - lse for q in lq]
        per_row = np.array([math.exp(q) / max(c, 1) for q, c in zip(self._log_q_f, counts,
                                                                    strict=True)], np.float32)
        return per_row[gb]
