"""One line on stderr before a compiled solver is compiled, so that a first call that blocks for a
minute says why.

The Co-Mixup and Puzzle Mix solvers are compiled by numba on their first call and cached on disk
(``__pycache__`` beside the source, or ``NUMBA_CACHE_DIR``). :func:`announce_compilation` looks,
before that first call in a process, whether numba holds a usable cache entry for the call's argument
types (the same index numba reads: this machine, this numba, this source); only when it does not
does it print, once per solver and process::

    comixup: compiling the Co-Mixup solver for this machine (once, up to a minute); cached in DIR
"""
from __future__ import annotations

import inspect
import sys
import threading
from typing import Any

__all__ = ["announce_compilation", "will_compile"]

_announced: set[int] = set()
_lock = threading.Lock()


def will_compile(dispatcher: Any, args: tuple) -> bool:
    """Whether calling the numba ``dispatcher`` with ``args`` compiles it: True unless it is already
    compiled in this process for these argument types or its disk cache holds a fresh entry for
    them."""
    try:
        from numba.core import types

        # the types numba compiles for: the arguments', then each omitted default as types.Omitted
        parameters = list(inspect.signature(dispatcher.py_func).parameters.values())
        signature = (*(dispatcher.typeof_pyval(arg) for arg in args),
                     *(types.Omitted(parameter.default) for parameter in parameters[len(args):]))
        if signature in dispatcher.overloads:
            return False
        cache = dispatcher._cache
        index = cache._cache_file._load_index()
        return cache._index_key(signature, dispatcher.targetctx.codegen()) not in index
    except Exception:  # noqa: BLE001 - numba's cache internals changed: assume a compile, as a fresh install does
        return not getattr(dispatcher, "overloads", None)


def cache_folder(dispatcher: Any) -> str:
    """Where numba keeps ``dispatcher``'s compiled code."""
    try:
        return str(dispatcher._cache._cache_path)
    except AttributeError:
        return "numba's cache"


def announce_compilation(dispatcher: Any, args: tuple, what: str) -> None:
    """Before a call of ``dispatcher`` with ``args``: print one line to stderr when it is about to be
    compiled, the first time this process calls it (any thread; later calls print nothing)."""
    key = id(dispatcher)
    if key in _announced:
        return
    with _lock:
        if key in _announced:
            return
        _announced.add(key)
        if will_compile(dispatcher, args):
            print(f"comixup: compiling {what} for this machine (once, up to a minute); cached in "
                  f"{cache_folder(dispatcher)}", file=sys.stderr, flush=True)
