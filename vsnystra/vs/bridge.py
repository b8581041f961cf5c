"""Python half of the native shim (csrc/nystra_shim.c).

The shim calls :func:`provide` with the GIL held whenever a user calls ``core.nystra.<Name>(...)``. We hand a
callable back through the public ``core.nystra.SetImpl`` hook; VapourSynth's own binding wraps it as a VSFunction,
the shim stores it in a thread-local slot, calls it once and frees it. Nothing is cached here either, so a
recreated core or a reloaded implementation module is always picked up.

The callable resolves ``<python_module>.<Name>`` at call time, converts arguments to plain Python values (single
values for scalar arguments, lists for ``int[]`` ones), keeps Python's stdout away from fd 1 (vspipe's video
stream) and turns any exception into a ``vs.Error`` whose message names the filter.

A user's mistake (:class:`vsnystra.vs.validate.FilterError`) while a VapourSynth host evaluates a script (vspipe,
an editor: the outermost Python frame is the script, ``__name__ == "__vapoursynth__"``) ends the evaluation with
:class:`ScriptStopped` instead: VapourSynth then prints its one-line message (vspipe: two lines on stderr, exit
code 1) rather than two tracebacks that repeat it. Elsewhere (plain Python, ``vsnystra restore``) it stays a
``vs.Error`` that callers can catch.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

_guard_lock = threading.Lock()
_guard_depth = 0
_saved_stdout: Any = None


@contextlib.contextmanager
def python_stdout_to_stderr() -> Iterator[None]:
    """Send Python-level prints to stderr while vsnystra code runs (re-entrant and thread-safe)."""
    global _guard_depth, _saved_stdout
    with _guard_lock:
        if _guard_depth == 0:
            _saved_stdout = sys.stdout
            sys.stdout = sys.stderr
        _guard_depth += 1
    try:
        yield
    finally:
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0:
                sys.stdout = _saved_stdout
                _saved_stdout = None


def _flush_c_stdio() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def fd_stdout_to_stderr() -> Iterator[None]:
    """Point fd 1 at stderr for one-time native initialisation (imports of torch & co.).

    Only used around the first import of the implementation module, which happens while the script is evaluated,
    i.e. before vspipe starts writing frames to fd 1.
    """
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    _flush_c_stdio()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 at all: nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        _flush_c_stdio()
        os.dup2(saved, 1)
        os.close(saved)


_import_lock = threading.Lock()


def resolve(name: str, module: str) -> Callable[..., Any]:
    """Import ``module`` (first time with fd 1 guarded) and return its attribute ``name``."""
    mod = sys.modules.get(module)
    if mod is None:
        from vsnystra.runtime.memory import prefer_huge_pages

        prefer_huge_pages()  # before torch's first allocation (see vsnystra.runtime.memory)
        with _import_lock, fd_stdout_to_stderr():
            mod = importlib.import_module(module)
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise AttributeError(f"{module} has no callable {name!r}")
    return fn  # type: ignore[no-any-return]


def array_arguments(namespace: str, name: str) -> frozenset[str]:
    """Names of the ``type[]`` arguments of ``core.<namespace>.<name>``, read from the live signature."""
    from vapoursynth import core

    sig = getattr(getattr(core, namespace), name).signature
    return frozenset(part.split(":")[0] for part in sig.split(";") if part.count(":") >= 1 and "[]" in part)


def normalise(kwargs: dict[str, Any], arrays: frozenset[str]) -> dict[str, Any]:
    """Lists for array arguments, single values for scalars, ``str`` for text ``data`` arguments."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in arrays:
            value = list(value) if isinstance(value, list | tuple) else [value]
        elif isinstance(value, list | tuple) and len(value) == 1:
            value = value[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="surrogateescape")
        out[key] = value
    return out


class ScriptStopped(SystemExit):
    """Ends a script's evaluation with a one-line message (see the module docstring)."""


def _evaluating_script() -> bool:
    """True when the outermost Python frame of this thread is a script a VapourSynth host evaluates."""
    frame = sys._getframe()
    while frame.f_back is not None:
        frame = frame.f_back
    return frame.f_globals.get("__name__") == "__vapoursynth__" and not getattr(
        sys.modules.get("__main__"), "__file__", None
    )


def _message(name: str, namespace: str, exc: BaseException) -> str:
    text = str(exc)
    if text.startswith(f"{namespace}.{name}"):
        return text
    return f"{namespace}.{name}: {type(exc).__name__}: {text}"


def make_implementation(name: str, module: str, namespace: str) -> Callable[..., Any]:
    """The callable handed to the shim for one call of ``core.<namespace>.<name>``."""

    def implementation(**kwargs: Any) -> Any:
        import vapoursynth as vs

        with python_stdout_to_stderr():
            try:
                fn = resolve(name, module)
            except Exception as exc:
                log.debug("nystra bridge: cannot load %s.%s", module, name, exc_info=True)
                missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
                if missing and not missing.startswith("vsnystra"):
                    fix = f"pip install {missing.split('.')[0]} into {sys.executable}"
                else:
                    fix = "reinstall or update vsnystra (scripts/setup.sh)"
                raise vs.Error(
                    f"{namespace}.{name}: the Python implementation {module}.{name} is not available "
                    f"({type(exc).__name__}: {exc}); fix: {fix}"
                ) from exc
            try:
                return fn(**normalise(kwargs, array_arguments(namespace, name)))
            except Exception as exc:
                log.debug("nystra bridge: %s.%s raised", namespace, name, exc_info=True)
                from vsnystra.vs.validate import FilterError  # loaded with the filters already

                if isinstance(exc, FilterError) and _evaluating_script():
                    raise ScriptStopped(" ".join(_message(name, namespace, exc).split())) from None
                raise vs.Error(_message(name, namespace, exc)) from exc

    implementation.__name__ = implementation.__qualname__ = f"{namespace}_{name}"
    return implementation


def provide(name: str, module: str, namespace: str) -> None:
    """Called by the shim (GIL held): hand the implementation of ``name`` to ``core.<namespace>.SetImpl``."""
    from vapoursynth import core

    getattr(core, namespace).SetImpl(name=name, func=make_implementation(name, module, namespace))
