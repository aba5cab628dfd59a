"""Adverse-action reason codes: a table from a feature (and the sign of its attribution) to a reason
text, and the principal reasons of one decision.

    codes = ReasonCodes({("income", "-"): "Income insufficient for amount of credit requested",
                         "debt_ratio": "Excessive obligations in relation to income"})

A key is a feature name (either sign) or a ``(feature, "+" | "-")`` pair, where the sign is that of the
feature's attribution to the explained output (``ml.explanation.output``; for a binary classifier, the
log-odds or probability of the positive class). Name only the signs that count against the applicant.
The principal reasons are the texts of a decision's ranked attributions that the table names, each text
once, at most `max_reasons` of them: four by default, the number US Regulation B (12 CFR 1002.9) names as
the most a notice should give.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

#: Regulation B's convention: no more than four principal reasons.
DEFAULT_MAX_REASONS = 4
SIGNS = ("+", "-")


def _split(key: Any) -> tuple[Any, Any]:
    """(feature, sign or None) of a table key; (None, None) for a key of neither form."""
    if isinstance(key, str):
        return key, None
    if isinstance(key, tuple) and len(key) == 2:
        return key
    return None, None


class ReasonCodes:
    """A reason-code table and how many principal reasons a decision gets."""

    def __init__(self, table: Mapping[Any, str], max_reasons: int = DEFAULT_MAX_REASONS) -> None:
        if isinstance(max_reasons, bool) or not isinstance(max_reasons, int) or max_reasons < 1:
            raise ValueError(f"otel-rai: max_reasons must be a whole number of at least 1, not {max_reasons!r}")
        self.max_reasons = max_reasons
        self._texts: dict[tuple[str, str | None], str] = {}
        for key, text in table.items():
            feature, sign = _split(key)
            if not isinstance(feature, str) or not feature or sign not in (None, *SIGNS):
                raise ValueError(f"otel-rai: reason code key {key!r} is not a feature name or a (feature, '+' or "
                                 "'-') pair")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"otel-rai: the reason text for {key!r} must be a non-empty string")
            self._texts[(feature, sign)] = text

    def text(self, feature: str, attribution: float) -> str | None:
        """The reason text for `feature` moving the output by `attribution`, if the table names it."""
        sign = "+" if attribution > 0 else "-"
        return self._texts.get((feature, sign)) or self._texts.get((feature, None))

    def principal(self, reasons: Sequence[tuple[str, float]]) -> list[str]:
        """The principal reasons of one decision, from its (feature, attribution) pairs in rank order."""
        out: list[str] = []
        for feature, attribution in reasons:
            text = self.text(feature, attribution) if attribution != 0 else None
            if text is not None and text not in out:
                out.append(text)
                if len(out) == self.max_reasons:
                    break
        return out

    def to_json(self) -> dict[str, Any]:
        """The table as JSON (for the model's ``otel_rai.json``)."""
        return {"max_reasons": self.max_reasons,
                "codes": [{"feature": f, "sign": s, "text": t} for (f, s), t in self._texts.items()]}
