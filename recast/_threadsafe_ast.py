"""Serialise :func:`ast.parse` on Pythons whose AST conversion is not thread-safe.

CPython 3.11 and 3.12 (gh-106905; seen here on 3.11.7) keep the recursion-depth bookkeeping of the
C-to-Python AST conversion in interpreter-wide state, so two threads parsing at once can raise
``SystemError: AST constructor recursion depth mismatch``. Python 3.11's :mod:`traceback` parses
source lines to place its ``^^^`` markers, so any two threads formatting a traceback at the same
moment (Prefect's task threads logging a retry, a warning, a handled error) could turn a healthy
run into an internal error. One lock around the parse removes the race; parsing is rare and short
outside of imports, so nothing measurable is lost.
"""

from __future__ import annotations

import ast
import sys
import threading

_AFFECTED = sys.version_info < (3, 13)


def install() -> None:
    """Wrap :func:`ast.parse` in a lock once (on affected Pythons only)."""
    if not _AFFECTED or getattr(ast.parse, "_recast_locked", False):
        return
    parse = ast.parse
    lock = threading.RLock()

    def locked_parse(*args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            return parse(*args, **kwargs)

    locked_parse._recast_locked = True  # type: ignore[attr-defined]
    locked_parse.__doc__ = parse.__doc__
    ast.parse = locked_parse  # type: ignore[assignment]
