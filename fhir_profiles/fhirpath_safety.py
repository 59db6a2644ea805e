"""Caller-supplied FHIRPath, bounded: regular expressions with a timeout and an overall time budget.

fhirpathpy runs ``matches()`` and ``replaceMatches()`` with the standard ``re`` module, which
backtracks without bound while holding the GIL: ``'aaaa…!'.matches('(a|a)+$')`` on 30 characters
stalls every thread of the process for minutes. Here both functions use the ``regex`` module with a
timeout and ``concurrent=True`` (the GIL is released while it matches), and a whole evaluation runs
under a deadline enforced by a watchdog thread that raises :class:`ExpressionLimitError` in the
evaluating thread (pure Python evaluation, e.g. an exponential ``combine()`` chain, is interrupted
between bytecodes). FHIRPath N1 §5.6.10 ``matches``, §5.6.11 ``replaceMatches``.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import regex

T = TypeVar("T")


@dataclass(frozen=True)
class ExpressionLimits:
    """``time_limit``: seconds one evaluation may run; ``regex_timeout``: seconds one regex may run;
    ``max_pattern``/``max_expression``: characters of a pattern / of an expression."""

    time_limit: float = 2.0
    regex_timeout: float = 0.1
    max_pattern: int = 1000
    max_expression: int = 4000


class ExpressionLimitError(BaseException):
    """An evaluation went past a limit. A BaseException so that fhirpathpy's own ``except Exception``
    clauses cannot swallow it half-way."""

    def __init__(self, message: str = "") -> None:  # the watchdog raises the bare class
        super().__init__(message)
        self.message = message


_DEFAULT = ExpressionLimits()
_limits: ContextVar[ExpressionLimits | None] = ContextVar("fhirpath_limits", default=None)


def _current() -> ExpressionLimits:
    return _limits.get() or _DEFAULT


def _pattern(pattern: str, flags: int) -> Any:
    limits = _current()
    if len(pattern) > limits.max_pattern:
        raise ExpressionLimitError(
            f"the regular expression is longer than the limit of {limits.max_pattern} characters"
        )
    try:
        return regex.compile(pattern, flags | regex.VERSION0)
    except regex.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from exc


def _timed_out() -> ExpressionLimitError:
    return ExpressionLimitError(
        f"a regular expression ran longer than the limit of {_current().regex_timeout:g} s "
        "(COORDINATION_EXPRESSION_REGEX_TIMEOUT)"
    )


def _string(coll: list[Any]) -> str:
    if len(coll) == 1 and isinstance(coll[0], str):
        return coll[0]
    raise ValueError(f"expected one string, got {coll!r:.80}")


def _matches(coll: list[Any], pattern: Any) -> Any:
    if not pattern or not coll:
        return []
    compiled = _pattern(str(pattern), regex.DOTALL)
    try:
        return compiled.search(_string(coll), timeout=_current().regex_timeout, concurrent=True) is not None
    except TimeoutError as exc:
        raise _timed_out() from exc


def _replace_matches(coll: list[Any], pattern: Any, replacement: Any) -> Any:
    if not coll or isinstance(pattern, list) or isinstance(replacement, list):
        return []
    string = _string(coll)
    # FHIRPath writes groups as $1; Python's template syntax is \1.
    template = regex.sub(r"\$(\d+)", r"\\\1", str(replacement))
    compiled = _pattern(str(pattern), 0)
    try:
        result: str = compiled.sub(template, string, timeout=_current().regex_timeout, concurrent=True)
    except TimeoutError as exc:
        raise _timed_out() from exc
    return result


# fhirpathpy's userInvocationTable overrides its own functions of the same name.
INVOCATIONS: dict[str, dict[str, Any]] = {
    "matches": {"fn": _matches, "arity": {1: ["String"]}, "nullable_input": True},
    "replaceMatches": {"fn": _replace_matches, "arity": {2: ["String", "String"]}, "nullable_input": True},
}
OPTIONS: dict[str, Any] = {"userInvocationTable": INVOCATIONS}


class _Watchdog:
    """One daemon thread for every deadline: raises ExpressionLimitError in a thread past its own."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, tuple[int, str]] = {}  # ticket -> (thread id, message)
        self._fired: set[int] = set()
        self._tickets = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, message: str) -> int:
        ticket = next(self._tickets)
        with self._cond:
            self._armed[ticket] = (threading.get_ident(), message)
            heapq.heappush(self._heap, (time.monotonic() + seconds, ticket))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fhirpath-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return ticket

    def disarm(self, ticket: int) -> bool:
        """True when the deadline had passed (the exception may still be pending: it is cleared)."""
        with self._cond:
            tid, _ = self._armed.pop(ticket, (0, ""))
            fired = ticket in self._fired
            self._fired.discard(ticket)
            if fired:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)
        return fired

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, ticket = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                armed = self._armed.get(ticket)
                if armed is None:
                    continue
                self._fired.add(ticket)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(armed[0]), ctypes.py_object(ExpressionLimitError)
                )


_WATCHDOG = _Watchdog()


@contextmanager
def limits(config: ExpressionLimits) -> Iterator[None]:
    token = _limits.set(config)
    try:
        yield
    finally:
        _limits.reset(token)


def bounded(evaluate: Callable[[], T], config: ExpressionLimits) -> T:
    """``evaluate()`` under ``config``: ExpressionLimitError past the time limit or a regex timeout."""
    message = (
        f"the expression ran longer than the limit of {config.time_limit:g} s "
        "(COORDINATION_EXPRESSION_TIME_LIMIT)"
    )
    with limits(config):
        ticket = _WATCHDOG.arm(config.time_limit, message)
        try:
            try:
                result = evaluate()
            finally:
                fired = _WATCHDOG.disarm(ticket)
        except ExpressionLimitError as exc:
            _WATCHDOG.disarm(ticket)  # idempotent; cleans up when the exception landed inside disarm()
            if not exc.message:  # the watchdog's
                raise ExpressionLimitError(message) from None
            raise
        if fired:
            raise ExpressionLimitError(message)
        return result
