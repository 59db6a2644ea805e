"""Caller-supplied FHIRPath, bounded: regular expressions with a timeout, expressions and patterns capped.

fhirpathpy runs ``matches()`` and ``replaceMatches()`` with the standard ``re`` module, which
backtracks without bound while holding the GIL: ``'aaaa…!'.matches('(a|a)+$')`` on 30 characters
stalls every thread of the process for minutes. Here both functions use the ``regex`` module with a
timeout and ``concurrent=True`` (the GIL is released while it matches); expressions and patterns have
a length cap. FHIRPath N1 §5.6.10 ``matches``, §5.6.11 ``replaceMatches``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import regex

T = TypeVar("T")


@dataclass(frozen=True)
class ExpressionLimits:
    """``regex_timeout``: seconds one regex may run;
    ``max_pattern``/``max_expression``: characters of a pattern / of an expression."""

    regex_timeout: float = 0.1
    max_pattern: int = 1000
    max_expression: int = 4000


class ExpressionLimitError(BaseException):
    """An evaluation went past a limit. A BaseException so that fhirpathpy's own ``except Exception``
    clauses cannot swallow it half-way."""

    def __init__(self, message: str = "") -> None:
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


@contextmanager
def limits(config: ExpressionLimits) -> Iterator[None]:
    token = _limits.set(config)
    try:
        yield
    finally:
        _limits.reset(token)


def bounded(evaluate: Callable[[], T], config: ExpressionLimits) -> T:
    """``evaluate()`` under ``config``: ExpressionLimitError on a regex timeout. There is no overall time
    budget: interrupting a thread from outside (an asynchronous exception) can land inside a lock's
    release and wedge the process, so pure-Python cost is bounded by ``max_expression`` only (and, last,
    by the HTTP worker's timeout)."""
    with limits(config):
        return evaluate()
