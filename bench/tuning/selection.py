"""Model-selection rules (SubpopBench's settings) and the group labels each withholds."""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import UserError, unknown


@dataclass(frozen=True)
class SelectionRule:
    name: str
    metric: str  # key into Metrics, read on the validation split
    val_group_labels: bool  # whether the rule itself reads validation group labels
    allows_group_labels: bool  # whether methods may use any group (attribute) labels
    description: str


RULES = {
    "worst-group": SelectionRule(
        "worst-group", "wga", True, True,
        "select by validation worst-group accuracy (validation group labels known)",
    ),
    "worst-class": SelectionRule(
        "worst-class", "worst_class", False, False,
        "select by validation worst-class accuracy (no attribute labels anywhere)",
    ),
    "average": SelectionRule(
        "average", "avg", False, False,
        "select by validation average accuracy (no attribute labels anywhere)",
    ),
}


def get_rule(name: str) -> SelectionRule:
    if name not in RULES:
        raise unknown("selection rule", name, RULES)
    return RULES[name]


def labels_used(
    method_labels: frozenset[str], rule: SelectionRule, tuned: bool = True
) -> list[str]:
    """Splits whose group labels a (method, rule) pair reads, for every result row.

    The rule reads validation group labels only when it selects among trials: a method
    run at fixed parameters (no search space, or --trials 0) does not use them.
    """
    used = set(method_labels)
    if rule.val_group_labels and tuned:
        used.add("val")
    return sorted(used)


def check_allowed(method_name: str, method_labels: frozenset[str], rule: SelectionRule) -> None:
    """Refuse a method that needs group labels the selection setting withholds."""
    if method_labels and not rule.allows_group_labels:
        raise UserError(
            f"method '{method_name}' needs group labels on {', '.join(sorted(method_labels))}, "
            f"which selection '{rule.name}' withholds; use --selection worst-group"
        )


def select_score(val_metrics: dict[str, float], rule: SelectionRule) -> float:
    return float(val_metrics[rule.metric])
