"""The library versions of a model record: Python, numpy, scipy, scikit-learn, and every library whose
classes the model is made of (xgboost, lightgbm, ...), plus pandas when the model saw DataFrames."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import sys
from typing import Iterable

#: Always recorded: what every scikit-learn model computes with.
CORE = ("numpy", "scipy", "sklearn")
#: Top-level modules whose distribution has another name.
_DISTRIBUTIONS = {"sklearn": "scikit-learn"}
#: Modules that are no library (the user's script, the standard library's roots).
_NOT_LIBRARIES = frozenset({"__main__", "builtins", "abc", "collections", "functools", "typing"})


def distribution(module: str) -> str:
    """The distribution name of top-level module `module` (``sklearn`` is ``scikit-learn``)."""
    return _DISTRIBUTIONS.get(module, module)


@functools.lru_cache(maxsize=256)
def version_of(name: str) -> str | None:
    """The installed version of distribution `name` (``python`` for the interpreter), or None. Cached: the
    audit worker asks once per library, and a library's version does not change under a running process."""
    if name == "python":
        return platform.python_version()
    try:
        return importlib.metadata.version(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def libraries(class_names: Iterable[str], *, pandas: bool = False) -> dict[str, str]:
    """{distribution: version} for Python, the `CORE` libraries, the libraries of `class_names`
    (qualified class names) and, if `pandas`, pandas."""
    roots = dict.fromkeys(CORE)
    roots.update(dict.fromkeys(name.split(".")[0] for name in class_names))
    if pandas:
        roots["pandas"] = None
    out = {"python": platform.python_version()}
    for root in roots:
        if root in _NOT_LIBRARIES or root in sys.stdlib_module_names:
            continue
        name = distribution(root)
        found = version_of(name)
        if found:
            out[name] = found
    return out


def differences(recorded: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """(library, recorded version, installed version or None) for every library whose version changed."""
    out = []
    for name, then in sorted(recorded.items()):
        version_of.cache_clear()  # a reader asks once, about what is installed now
        now = version_of(name)
        if now != then:
            out.append((name, then, now))
    return out
