"""Looking for raw values in everything an instrumented process lets out.

`Secrets` makes distinctive values (numbers whose digits, and strings whose letters, cannot occur by
chance) and finds any of them in a text, in every rendering a library might give them (repr, str,
scientific notation, JSON and repr escapes). `everything_of` flattens a span (name, attributes, events,
status, resource) into one text, so a check covers attributes that later versions add.
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any, Iterable

#: The kinds of run a needle is made of (`Secrets.found_in`).
#: A digit run of more than 12 digits is a timestamp or an id, not a secret's printing: searching it would
#: find some 8-digit needle there by chance, sooner or later.
_RUNS = [re.compile(p) for p in (r"(?<![0-9])[0-9]{8,12}(?![0-9])", r"[A-Za-z]+", r"[^\x00-\x7f]+",
                                 r"(?:\\u[0-9a-f]{4})+")]
#: Hashes and ids (record hashes, trace and span ids, input hashes): their digit runs are random, and
#: one of a thousand runs holds some 8-digit needle by chance, so digits are not searched inside them.
_HEX_IDS = re.compile(r"[0-9a-f]{16,}")
#: A timestamp's fraction of a second (``10:35:43.860034310``) is a clock reading, not a printing: with two
#: thousand 8-digit needles, the few hundred timestamps a CLI output shows held one by chance in about
#: three runs of a hundred (it failed CI once), so digits are not searched there either.
_CLOCK = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]+")
#: Digits after the leading one that a numeric secret shares with every printing of it: numpy prints
#: 9 significant digits in scientific notation (``1.23456789e+08``), repr and str print all of them.
_DIGITS = 8


def _marker(rng: random.Random) -> str:
    """Ten random ASCII letters, alternating case: no word, no hex, no base64 of anything we emit."""
    return "".join(rng.choice(string.ascii_uppercase if i % 2 else string.ascii_lowercase) for i in range(10))


@dataclass
class Secrets:
    """Secret values made for one test, and the needles that find them."""

    rng: random.Random
    needles: set[str] = field(default_factory=set)
    _indexed: tuple[int, list] = (-1, [])

    def number(self) -> float:
        """A float of 9 significant digits (no 0 or 9 at the end, so no rounding hides it), ≥ 1e8."""
        digits = [self.rng.choice("12345678")] + [self.rng.choice("0123456789") for _ in range(7)] \
            + [self.rng.choice("12345678")]
        value = float("".join(digits)) * self.rng.choice([1, 1, 1000])  # printed with at most 12 digits in a row
        self.needles.add("".join(digits)[1:1 + _DIGITS])
        return value

    def integer(self) -> int:
        value = int("".join([self.rng.choice("123456789")] + [self.rng.choice("0123456789") for _ in range(8)]))
        self.needles.add(str(value)[1:1 + _DIGITS])
        return value

    def text(self) -> str:
        """A string around a marker, sometimes with both quotes, escapes, spaces or non-ASCII."""
        marker = _marker(self.rng)
        self.needles.add(marker)
        decoration = self.rng.choice(["", "'", '"', "'\"", "\\", " ", "\n", "é", "☃", "\t", "%", ",=", "\x00"])
        return self.rng.choice([marker, marker + decoration, decoration + marker, decoration + marker + decoration])

    def unicode(self) -> str:
        """A secret written in non-Latin letters (found raw and JSON-escaped)."""
        word = "".join(self.rng.choice("日本語テキストпривет") for _ in range(8))
        self.needles.add(word)
        self.needles.add(json.dumps(word)[1:-1])
        self.needles.add(word.encode("utf-8").decode("latin-1"))  # as the bytes of a file or the wire
        return word

    def found_in(self, text: str) -> list[str]:
        """The needles that occur in `text`. Each needle is a run of one kind of character (digits,
        letters, non-ASCII, JSON escapes), so only the runs of that kind in `text` are searched."""
        if self._indexed[0] != len(self.needles):
            kinds = [(run_of, {n for n in self.needles if run_of.fullmatch(n)}) for run_of in _RUNS]
            self._indexed = (len(self.needles), [(r, n, {len(x) for x in n}) for r, n in kinds])
        found: set[str] = set()
        outside_ids = _CLOCK.sub(" ", _HEX_IDS.sub(" ", text))
        for run_of, needles, lengths in self._indexed[1]:
            for run in run_of.findall(outside_ids if run_of is _RUNS[0] else text):
                for length in lengths:
                    found.update(w for i in range(len(run) - length + 1) if (w := run[i:i + length]) in needles)
        return sorted(found)


def _rendered(value: Any) -> str:
    if isinstance(value, dict):
        return repr(dict(value))
    if isinstance(value, (list, tuple)):
        return repr(list(value))
    return repr(value)


def everything_of(span: Any) -> str:
    """Every text a span carries (an SDK ReadableSpan)."""
    parts = [span.name, _rendered(dict(span.attributes or {})), _rendered(dict(span.resource.attributes)),
             span.status.description or ""]
    for event in span.events:
        parts += [event.name, _rendered(dict(event.attributes or {}))]
    for link in span.links:
        parts.append(_rendered(dict(link.attributes or {})))
    return "\n".join(parts)


def file_texts(paths: Iterable[Any]) -> dict[str, str]:
    """The bytes of each file, as text (latin-1: every byte is one character, nothing is lost)."""
    return {str(p): p.read_bytes().decode("latin-1") for p in paths if p.is_file()}
