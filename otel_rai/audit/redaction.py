"""Exception text as an audit span may carry it: the exception's type and a *template* of its message.

A model that rejects its input often quotes the input in its message (``array=[9.87e+05 77.]``,
``Found unknown categories [np.int64(8675309)]``, ``array=abc.``), so by default no part of a message
reaches a span unless it is known to be harmless. `template` keeps, of a message:

* words made of ASCII letters (and ``_``, ``.``, ``-``, ``'`` between letters: ``n_features_in_``,
  ``array.reshape``, ``doesn't``, ``LogisticRegression``) whose every part, split at those characters
  and at lower-to-upper case changes, is in `VOCABULARY`: English words of error messages and the parts
  of the names of common estimators;
* spacing (runs collapsed to one space or one line break) and the punctuation ``( ) < > , ; : = ! ? |``
  and runs of ``- * / + . #`` alone;

and replaces everything else: a word with a digit or any other character, or not in the vocabulary,
becomes ``…``; a quoted text ``'…'``, whatever it held; a bracketed ``[…]`` or braced ``{…}`` group,
whatever it held, nested groups and quotes included. An unterminated quote or group runs to the end.
A value that is itself a vocabulary word (``None``, ``nan``, ``a``) may remain when a library writes it
unquoted; every other literal is gone.

`describe` gives the three texts a span records: the status description, ``exception.message`` and
``exception.stacktrace``. The stack trace keeps each frame's file, line and function, and the type and
template of every exception in the chain (``raise ... from``, and exceptions raised while handling
another); no source lines (code can embed data), no local variables, no message. With
``record_exception_messages=True`` all three are Python's own, message and source lines included.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import Iterator

from otel_rai.codec.text import safe

#: What replaces a literal.
LITERAL = "…"
#: The longest template recorded; a longer one is cut and ends with `LITERAL`.
MAX_TEMPLATE_CHARS = 2000
#: Chained exceptions described in a stack trace, at most (a cycle or a very long chain stops there).
MAX_CHAIN = 16

VOCABULARY = frozenset("""
a about above accept accepted accepts access according actual add after again against algorithm all
allowed along already also alternatively although always an and another any appropriate are argument
arguments array arrays as assign at attribute attributes auto available axis
bad base based be because been before being below between binary bins bool boolean boosting both
broadcast but by bytes
calibrated call called calling can cannot case cast casting categorical categories category cause caused
change check class classes classifier classification clf code coef coerce column columns combine
compatible component components compute consider constant contain contained containing contains
contiguous convert converted copy correct could count cv
data dataframe decision decode default define defined dense depth detected determine did dict
dictionary different dim dimension dimensions dimensional directly do does doesn done double drop
dtype dtypes due during
each either element elements else empty encode encoded encoder encoding ensemble entries entry equal
error estimator estimators evaluate exactly exceeds except exception expected expecting explicitly
extra
failed false feature features fewer find finite first fit fitted float following for forest format
found frame from function
get given got gradient greater grid group
handle handles has have here hist histogram how
identical if ignore implement implemented impute imputer in incompatible index indexer indices inf
infinite infinity input inputs instance instead int integer integers into invalid is isn it item
items its
k key keys keyword
label labels large larger learn learning least len length less like linear list literal logistic
long
many mapping mask match matrix max maximum may mean method might min minimum mismatch missing mode
model models modules more most multi multiclass multioutput must
name named names nan nans native natively ndarray ndim need needs negative neighbors never new no
non none not np null number numbers numeric numerical numpy
object objects occurred of on one only operand operands option options or order other out output
outputs outside over
pandas parameter parameters parse part pass passed per pipeline please point positive possible
predict prediction predictions preprocess preprocessing present probabilities probability proba
range rank raw real received reg regression regressor reject rejected remainder represent required
requires reshape result results return returned rows row rule
same sample samples scalar scale scaler scikit score see seen select series set shape shapes should
single size sklearn so some sparse specified standard state step steps str string strings such
supervised support supported svc svm
than that the their them then there these they this those time to too transform transformed
transformer tree trees true try tuple two type types
unable unexpected unique unknown unseen unsupported use used using
valid validate value values vector
want was were when where which while will with within without wrong
x y yet you your
n work works working unknown ok okay because since until unless whether then than via per
able allow allows applied apply approach arbitrary ascending assume attempt avoid back became become
begin beginning best better big bound bounds buffer build built calculate calculated caller cannot
character characters choose chosen close closed collection combination common compare compared
complete complex condition configuration configured conflict consistent contents context continuous
conversion could create created current cutoff dataset declared deep deprecated descending description
detail details device differ dimensionality disabled discrete distribution divide division dropped
duplicate duplicated dynamic enable enabled encountered end ending ensure enough environment equals
estimate evaluated even every example exist existing exists expect expects explicit exponent expression
fail fails false field fields file filled filter final fix flag floating follow forbidden form found
full fully generate generated global go greater having height hold holds id identifier ignored
illegal immutable import include included including increase indicate infer inferred information
initial initialized inner instances integral internal interpret interval iterable iteration
iterations kind known last later least left level library limit limits line lines load loaded local
lower make makes malformed mapped maps mean means memory message messages minus mixed modified
module more mutable nan native necessary needed nested nor normal normalize note nothing null
observed obtain occur occurs offset once open operation operations optional original others otherwise
overflow own pair pairs parsed partial path pattern perform permitted position positional precision
previous previously problem process produce produced property provide provided provides raise raised
read reason recognized reduce refer reference regular relative remove removed repeated replace
report request requested reset resolve resource respectively restricted retrieve right root run
running safe satisfy second sequence sequences setting shorter sign signature similar simple since
skip slice small smaller solver sort sorted source space specific specify split start state stop
storage store strict structure subset successful sum sure system table take target test text
there thus total track trained training truncated twice underflow unhashable unit unordered unsorted
up update upper usage user utf valid version view warning way weight weights whole width wise
word would write written zero quote quotes quoted
can couldn don isn wasn weren won aren t s ll re ve
""".split())

_SEPARATORS = frozenset("()<>,;:=!?|")
_CLOSE = {"[": "]", "{": "}"}
_SPACE = " \t\f\v"
_NEWLINE = "\r\n"
_TOKEN_END = frozenset(_SPACE + _NEWLINE + "'\"[]{}") | _SEPARATORS
_WORD = re.compile(r"[A-Za-z]+(?:[_.\-'][A-Za-z]*)*_*\Z")
_PIECES = re.compile(r"[_.\-']")
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
_PUNCTUATION_RUN = re.compile(r"[-*/+.#]+\Z")


def _known(word: str) -> bool:
    """Whether every part of `word` (an ASCII word, see the module docstring) is in the vocabulary."""
    if not _WORD.match(word):
        return False
    pieces = [p for p in _PIECES.split(word) if p]
    return bool(pieces) and all(p.lower() in VOCABULARY or all(part.lower() in VOCABULARY for part in
                                                                _PARTS.findall(p)) for p in pieces)


def _quoted_end(text: str, start: int) -> int:
    """The index after the quote that closes the one at `start` (backslash escapes honoured), or len."""
    quote, i, n = text[start], start + 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == quote:
            return i + 1
        i += 1
    return n


def _group_end(text: str, start: int) -> int:
    """The index after the bracket that closes the one at `start` (nesting and quotes honoured), or len."""
    stack, i, n = [_CLOSE[text[start]]], start + 1, len(text)
    while i < n and stack:
        c = text[i]
        if c in "'\"":
            i = _quoted_end(text, i)
            continue
        if c in _CLOSE:
            stack.append(_CLOSE[c])
        elif c == stack[-1]:
            stack.pop()
        i += 1
    return i


def _apostrophe_in_word(text: str, i: int) -> bool:
    return 0 < i < len(text) - 1 and text[i - 1].isascii() and text[i - 1].isalpha() \
        and text[i + 1].isascii() and text[i + 1].isalpha()


def template(message: str) -> str:
    """`message` with every literal replaced (see the module docstring)."""
    out: list[str] = []
    i, n, size = 0, len(message), 0
    while i < n:
        c = message[i]
        if c in _SPACE or c in _NEWLINE:
            j = i
            while j < n and (message[j] in _SPACE or message[j] in _NEWLINE):
                j += 1
            out.append("\n" if any(ch in _NEWLINE for ch in message[i:j]) else " ")
            i = j
        elif c in "'\"":
            out.append(f"'{LITERAL}'")
            i = _quoted_end(message, i)
        elif c in _CLOSE:
            out.append(c + LITERAL + _CLOSE[c])
            i = _group_end(message, i)
        elif c in _SEPARATORS or c in "]}":
            out.append(c)
            i += 1
        else:
            j = i
            while j < n and (message[j] not in _TOKEN_END or (message[j] == "'" and _apostrophe_in_word(message, j))):
                j += 1
            token = message[i:j]
            core = token.rstrip(".")
            if _PUNCTUATION_RUN.match(token) or _known(core):
                out.append(token)
            else:
                out.append(LITERAL + "." * (len(token) - len(core)))
            i = j
        size += len(out[-1])
        if size > MAX_TEMPLATE_CHARS:
            return "".join(out)[:MAX_TEMPLATE_CHARS] + LITERAL
    return "".join(out).strip()


def type_name(error: BaseException) -> str:
    """The exception's qualified type: ``ValueError``, ``sklearn.exceptions.NotFittedError``."""
    cls = type(error)
    module, qualname = getattr(cls, "__module__", None), getattr(cls, "__qualname__", cls.__name__)
    return safe(qualname if not module or module == "builtins" else f"{module}.{qualname}")


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return "<unprintable message>"


@dataclass(frozen=True)
class Described:
    """What a span records of an exception."""

    type: str
    message: str
    stacktrace: str

    @property
    def status(self) -> str:
        """The span status description: ``Type: message`` (the type alone when there is no message)."""
        return f"{self.type}: {self.message}" if self.message else self.type


def _chain(error: BaseException) -> Iterator[tuple[BaseException, str | None]]:
    """The exceptions of `error`'s chain, outermost last as Python prints them, each with the line that
    introduces the next."""
    seen: set[int] = set()
    links: list[tuple[BaseException, str | None]] = []
    current: BaseException | None = error
    note = None
    while current is not None and id(current) not in seen and len(links) < MAX_CHAIN:
        seen.add(id(current))
        links.append((current, note))
        if current.__cause__ is not None:
            note = "The above exception was the direct cause of the following exception:"
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            note = "During handling of the above exception, another exception occurred:"
            current = current.__context__
        else:
            current = None
    return reversed(links)


def _frames(tb: TracebackType | None) -> list[str]:
    stack = traceback.StackSummary.extract(traceback.walk_tb(tb), lookup_lines=False, capture_locals=False)
    return [f'  File "{safe(f.filename)}", line {f.lineno}, in {safe(f.name)}\n' for f in stack]


def describe(error: BaseException, *, full_messages: bool = False) -> Described:
    """The type, message and stack trace of `error` as a span records them (see the module docstring)."""
    if full_messages:
        try:
            stacktrace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        except Exception:
            stacktrace = ""
        return Described(type_name(error), safe(_message(error), MAX_TEMPLATE_CHARS * 8), safe(stacktrace, 1 << 16))
    parts: list[str] = []
    previous_note = None
    for exc, note in _chain(error):
        if previous_note is not None:
            parts.append(f"\n{previous_note}\n\n")
        frames = _frames(exc.__traceback__)
        if frames:
            parts.append("Traceback (most recent call last):\n")
            parts += frames
        text = template(_message(exc))
        parts.append(f"{type_name(exc)}: {text}\n" if text else f"{type_name(exc)}\n")
        previous_note = note
    return Described(type_name(error), template(_message(error)), "".join(parts))
