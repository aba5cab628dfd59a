"""Fairness metric definitions over per-group counts, with Fairlearn 0.15's ``between_groups`` semantics.

One short function per definition, its formula in the docstring. ``h(X)`` is the decision (1 when the
outcome is positive), ``Y`` the actual outcome, ``A`` the sensitive attribute. Every function works on
counts, so the same code serves the sliding windows of the live monitor, the audit report and the
Prometheus recording rules (which spell the same formulas in PromQL).

Where Fairlearn would return a number that is not supported by the data, these return ``None`` (no value,
rather than NaN or a misleading 0):

* a rate whose denominator is 0 (``true_positive_rate`` of a group with no actual positives:
  Fairlearn reports 0, through scikit-learn's ``confusion_matrix(normalize="true")``);
* a difference or ratio over fewer than two groups (Fairlearn: 0 and 1);
* a ratio whose largest value is 0 (Fairlearn: NaN);
* a group with fewer than ``min_group_size`` decisions (or, for the TPR and FPR terms, actual
  positives or negatives) takes no part in a difference or ratio, so a few decisions cannot raise an
  alert. Its own rate is still reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

Rates = Mapping[str, float]


def printed(value: Any) -> str:
    """A label as text, so that 1, 1.0, \"1\" and true compare equal (backends and JSON hand back the
    label 1 in any of those forms)."""
    if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
        value = int(value)
    return str(value)


def selection_rate(selected: int, total: int) -> float | None:
    """``P[h(X)=1 | A=a]`` = selected / decisions of the group."""
    return selected / total if total else None


def true_positive_rate(tp: int, fn: int) -> float | None:
    """``P[h(X)=1 | A=a, Y=1]`` = TP / (TP + FN); undefined without actual positives."""
    return tp / (tp + fn) if tp + fn else None


def false_positive_rate(fp: int, tn: int) -> float | None:
    """``P[h(X)=1 | A=a, Y=0]`` = FP / (FP + TN); undefined without actual negatives."""
    return fp / (fp + tn) if fp + tn else None


def difference(values: Iterable[float]) -> float | None:
    """``max_a v_a − min_a v_a`` over at least two groups (``MetricFrame.difference("between_groups")``)."""
    values = list(values)
    return max(values) - min(values) if len(values) >= 2 else None


def ratio(values: Iterable[float]) -> float | None:
    """``min_a v_a / max_a v_a`` over at least two groups, undefined when the max is 0
    (``MetricFrame.ratio("between_groups")``)."""
    values = list(values)
    if len(values) < 2 or max(values) == 0:
        return None
    return min(values) / max(values)


def demographic_parity_difference(selection_rates: Rates) -> float | None:
    """``max_a P[h(X)=1 | A=a] − min_a P[h(X)=1 | A=a]``; 0 when every group is selected alike."""
    return difference(selection_rates.values())


def demographic_parity_ratio(selection_rates: Rates) -> float | None:
    """``min_a P[h(X)=1 | A=a] / max_a P[h(X)=1 | A=a]``; the four-fifths rule asks for at least 0.8."""
    return ratio(selection_rates.values())


def equalized_odds_difference(tpr: Rates, fpr: Rates) -> float | None:
    """``max(TPR difference, FPR difference)``, the worst case of the two; undefined unless both are."""
    terms = (difference(tpr.values()), difference(fpr.values()))
    return None if None in terms else max(terms)  # type: ignore[type-var]


def equalized_odds_ratio(tpr: Rates, fpr: Rates) -> float | None:
    """``min(TPR ratio, FPR ratio)``, the worst case of the two; undefined unless both are."""
    terms = (ratio(tpr.values()), ratio(fpr.values()))
    return None if None in terms else min(terms)  # type: ignore[type-var]


@dataclass
class GroupCounts:
    """What one group did: decisions and selections, and the confusion counts of labelled ones."""

    decisions: int = 0
    selected: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add_outcome(self, predicted: bool, actual: bool, n: int = 1) -> None:
        """Count `n` labelled decisions with this prediction and ground truth in the confusion cells."""
        if actual:
            self.tp += n if predicted else 0
            self.fn += 0 if predicted else n
        else:
            self.fp += n if predicted else 0
            self.tn += 0 if predicted else n


@dataclass(frozen=True)
class Summary:
    """Every fairness figure of one sensitive attribute, from the counts of its groups."""

    selection_rate: dict[str, float] = field(default_factory=dict)
    true_positive_rate: dict[str, float] = field(default_factory=dict)
    false_positive_rate: dict[str, float] = field(default_factory=dict)
    demographic_parity_difference: float | None = None
    demographic_parity_ratio: float | None = None
    equalized_odds_difference: float | None = None
    equalized_odds_ratio: float | None = None


def _defined(rates: dict[str, float | None]) -> dict[str, float]:
    return {group: rate for group, rate in rates.items() if rate is not None}


def summarize(groups: Mapping[str, GroupCounts], min_group_size: int = 1) -> Summary:
    """Per-group rates, and the differences and ratios over the groups with enough support."""
    selection = _defined({g: selection_rate(c.selected, c.decisions) for g, c in groups.items()})
    tpr = _defined({g: true_positive_rate(c.tp, c.fn) for g, c in groups.items()})
    fpr = _defined({g: false_positive_rate(c.fp, c.tn) for g, c in groups.items()})
    selection_ok = {g: r for g, r in selection.items() if groups[g].decisions >= min_group_size}
    tpr_ok = {g: r for g, r in tpr.items() if groups[g].tp + groups[g].fn >= min_group_size}
    fpr_ok = {g: r for g, r in fpr.items() if groups[g].fp + groups[g].tn >= min_group_size}
    return Summary(
        selection_rate=selection,
        true_positive_rate=tpr,
        false_positive_rate=fpr,
        demographic_parity_difference=demographic_parity_difference(selection_ok),
        demographic_parity_ratio=demographic_parity_ratio(selection_ok),
        equalized_odds_difference=equalized_odds_difference(tpr_ok, fpr_ok),
        equalized_odds_ratio=equalized_odds_ratio(tpr_ok, fpr_ok),
    )
