"""The one definition of every metric (DESIGN §7), printed with every result.

- per-group accuracy for each evaluation group with at least one example in the split;
- worst-group accuracy (wga) = min over those groups;
- average accuracy (avg) = plain accuracy over all examples;
- adjusted average (adj_avg) = Σ_g π_g(train) · acc_g over the groups present, with the
  training proportions π renormalised over those groups (the Waterbirds convention);
- worst-class accuracy = min over classes present of the per-class accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

METRIC_NAMES = ("wga", "avg", "adj_avg", "worst_class")
DEFINITIONS = {
    "wga": "worst-group accuracy: min over evaluation groups present of group accuracy",
    "avg": "average accuracy: accuracy over all examples",
    "adj_avg": "adjusted average: sum_g pi_g(train) * acc_g over groups present",
    "worst_class": "worst-class accuracy: min over classes present of class accuracy",
}


@dataclass
class Metrics:
    wga: float
    avg: float
    adj_avg: float
    worst_class: float
    per_group: dict[str, float] = field(default_factory=dict)
    group_counts: dict[str, int] = field(default_factory=dict)
    per_class: dict[int, float] = field(default_factory=dict)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}{k}": getattr(self, k) for k in METRIC_NAMES}
        out.update({f"{prefix}group/{k}": v for k, v in self.per_group.items()})
        return out


def compute(
    pred: torch.Tensor,
    y: torch.Tensor,
    group_masks: torch.Tensor,
    group_names: list[str],
    n_classes: int,
    train_prior: torch.Tensor,
) -> Metrics:
    """Metrics of predictions `pred` against labels `y` (see the module docstring)."""
    correct = (pred == y).to(torch.float64)
    masks = group_masks.to(torch.float64)
    counts = masks.sum(dim=1)
    hits = masks @ correct
    present = counts > 0
    if not bool(present.any()):
        raise ValueError("no evaluation group has an example in this split")
    acc = torch.where(present, hits / counts.clamp_min(1), torch.zeros_like(hits))
    prior = train_prior.to(torch.float64) * present
    adj = float((prior * acc).sum() / prior.sum()) if float(prior.sum()) > 0 else float("nan")
    worst_class, per_class = _class_accuracy(correct, y, n_classes)
    acc_l, cnt_l, present_l = acc.tolist(), counts.tolist(), present.tolist()
    return Metrics(
        wga=float(acc[present].min()),
        avg=float(correct.mean()),
        adj_avg=adj,
        worst_class=worst_class,
        per_group={n: a for n, a, p in zip(group_names, acc_l, present_l, strict=True) if p},
        group_counts={n: int(c) for n, c in zip(group_names, cnt_l, strict=True)},
        per_class=per_class,
    )


def _class_accuracy(correct: torch.Tensor, y: torch.Tensor, n_classes: int
                    ) -> tuple[float, dict[int, float]]:
    """Worst-class accuracy and per-class accuracy over the classes present."""
    class_counts = torch.bincount(y, minlength=n_classes).to(torch.float64)
    class_hits = torch.bincount(y, weights=correct, minlength=n_classes)
    present = class_counts > 0
    class_acc = class_hits / class_counts.clamp_min(1)
    per_class = {k: float(class_acc[k]) for k in range(n_classes) if bool(present[k])}
    return float(class_acc[present].min()), per_class


def label_free(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> Metrics:
    """The metrics that need no group labels (average, worst-class); the group metrics are
    NaN. What a label-free selection rule sees of the validation split."""
    correct = (pred == y).to(torch.float64)
    worst_class, per_class = _class_accuracy(correct, y, n_classes)
    nan = float("nan")
    return Metrics(wga=nan, avg=float(correct.mean()), adj_avg=nan, worst_class=worst_class,
                   per_class=per_class)


def evaluate(predictor, split, store) -> Metrics:  # noqa: ANN001 - typed in bench.evaluation
    """Metrics of a Predictor on one FeatureSplit of `store` (only the label-free ones when
    the split's group labels are withheld)."""
    pred = predictor.predict(split.x)
    if not split.has_group_labels:
        return label_free(pred, split.y, store.n_classes)
    return compute(
        pred, split.y, split.eval_masks, store.eval_group_names, store.n_classes,
        store.train_eval_prior,
    )
