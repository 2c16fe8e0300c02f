"""Heads trained on frozen features: a linear head, and the CLIP prompt head.

The prompt head keeps CLIP's zero-shot geometry: z = normalize(P h), logits = s · z Tᵀ,
with P initialised from the encoder's visual projection (identity when h is already
projected) and T the normalised, prompt-ensembled class text embeddings (fixed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.errors import UserError

HEAD_KINDS = ("auto", "linear", "prompt")


class LinearHead(nn.Module):
    def __init__(self, dim: int, n_classes: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        # made on the meta device, then given its parameters: nn.Linear's own
        # initialisation would draw from the global torch stream (which e.g. dropout masks
        # also use), so a fit's numbers would depend on how many heads were made before it
        # in the process. (nn.utils.skip_init does the same, but its to_empty imported
        # torch's symbolic-shapes machinery, ~0.4 s of every run's first head.)
        self.linear = nn.Linear(dim, n_classes, device="meta")
        bound = 1.0 / dim**0.5
        w = torch.rand(n_classes, dim, generator=generator) * 2 * bound - bound
        self.linear.weight = nn.Parameter(w)
        self.linear.bias = nn.Parameter(torch.zeros(n_classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h)


class PromptHead(nn.Module):
    def __init__(
        self, text: torch.Tensor, projection: torch.Tensor | None, dim: int, logit_scale: float
    ) -> None:
        super().__init__()
        out_dim = text.shape[1]
        if projection is None:
            if out_dim != dim:
                raise UserError(
                    f"prompt head: feature dim {dim} != text dim {out_dim} and no projection"
                )
            projection = torch.eye(dim)
        self.proj = nn.Parameter(projection.detach().clone().to(torch.float32))
        self.register_buffer("text", nn.functional.normalize(text.detach().float(), dim=1))
        self.logit_scale = float(logit_scale)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = nn.functional.normalize(h @ self.proj.T, dim=1)
        return self.logit_scale * z @ self.text.T


class FeatureDropout(nn.Module):
    """Dropout on the feature before a head (training only), with masks drawn from a
    generator seeded by the fit's own generator: nn.Dropout draws from the global torch
    stream, which any other work in the process (another configuration's fit, a head
    being made) moves, so a fit's numbers would depend on what ran beside it.

    A mask draws 16 random bits per feature (64-bit random words viewed as four 16-bit
    lanes) instead of a float each: on the CPU a float draw per element made the masks
    most of SFR's training time (~0.5 ms per 128 × 384 batch; the words take a third of
    that). So p acts in steps of 1/65536 (p = 0.1 drops with probability 0.100006), and
    kept features are scaled by 1/(1 − that p), keeping the expectation exact."""

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise UserError(f"dropout {p}: expected 0 <= p < 1")
        self.p = float(p)
        steps = round(self.p * 65536)
        self._threshold = steps - 32768  # keep a lane (uniform over int16) when >= this
        self._scale = 1.0 / (1.0 - steps / 65536)
        self.seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self._gen: torch.Generator | None = None

    def factor(self, shape: tuple[int, ...] | torch.Size, device: torch.device) -> torch.Tensor:
        """The next mask, as the factor keep/(1 − p) both training engines multiply the
        features by (one draw per batch, in batch order)."""
        lanes = self._lanes(shape, device)
        if lanes.device.type == "cpu":  # the same values; NumPy's small ops dispatch faster
            keep = lanes.numpy() >= self._threshold
            return torch.from_numpy(np.multiply(keep, np.float32(self._scale), dtype=np.float32))
        return (lanes >= self._threshold).to(torch.float32).mul_(self._scale)

    def dropped(self, h: torch.Tensor) -> torch.Tensor:
        """h times the next mask's factor, outside autograd (the analytic engine): on the
        CPU (h · 1/(1−p)) · keep in NumPy, bit for bit h · factor (a dropped feature is
        ±0 with h's sign either way) in two operations instead of four."""
        if h.device.type != "cpu":
            return h * self.factor(h.shape, h.device)
        keep = self._lanes(h.shape, h.device).numpy() >= self._threshold
        out = np.multiply(h.numpy(), np.float32(self._scale))
        out *= keep
        return torch.from_numpy(out)

    def _lanes(self, shape: tuple[int, ...] | torch.Size, device: torch.device) -> torch.Tensor:
        """The next draw: 16 random bits per feature, from this dropout's own stream."""
        if self._gen is None or self._gen.device != torch.device(device):
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed)
        numel = math.prod(shape)
        words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device)
        words.random_(-(2**63), 2**63 - 1, generator=self._gen)
        return words.view(torch.int16)[:numel].view(tuple(shape))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return h
        return h * self.factor(h.shape, h.device)


@dataclass
class HeadFactory:
    """Makes fresh heads for one FeatureStore; `kind='auto'` picks prompt when text exists."""

    dim: int
    n_classes: int
    device: torch.device
    text: torch.Tensor | None = None
    projection: torch.Tensor | None = None
    logit_scale: float = 100.0
    kind: str = "auto"

    @property
    def resolved_kind(self) -> str:
        if self.kind == "auto":
            return "prompt" if self.text is not None else "linear"
        if self.kind == "prompt" and self.text is None:
            raise UserError("--head prompt needs class text embeddings; this encoder has none")
        if self.kind not in HEAD_KINDS:
            raise UserError(f"--head {self.kind}: expected one of {', '.join(HEAD_KINDS)}")
        return self.kind

    def make(self, generator: torch.Generator | None = None) -> nn.Module:
        if self.resolved_kind == "prompt":
            assert self.text is not None
            proj = None if self.projection is None else self.projection.cpu()
            head: nn.Module = PromptHead(self.text.cpu(), proj, self.dim, self.logit_scale)
        else:
            head = LinearHead(self.dim, self.n_classes, generator)
        return head.to(self.device)


def head_kind(module: nn.Module) -> str:
    """What a fitted model actually is, for results rows: `prompt` if it contains a prompt
    head, `linear` if a linear head or layer, else the module's class name."""
    mods = list(module.modules())
    if any(isinstance(m, PromptHead) for m in mods):
        return "prompt"
    if any(isinstance(m, (LinearHead, nn.Linear)) for m in mods):
        return "linear"
    return type(module).__name__
