"""Objects that own threads or connections re-initialise themselves in a forked child.

A child of ``fork`` (gunicorn and uvicorn workers, multiprocessing) inherits no threads and may inherit
locks held mid-operation, so each registered object gets a fresh ``_reset()``. Registration is weak:
objects of an uninstrumented session are not kept alive by it.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class Resettable(Protocol):
    def _reset(self) -> None: ...


_registered: weakref.WeakSet = weakref.WeakSet()


def reset_in_child(obj: Resettable) -> None:
    """Call ``obj._reset()`` in every child forked from now on, while `obj` lives."""
    _registered.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_registered):
        obj._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
