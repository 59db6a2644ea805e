"""One error model: exceptions carry a category; one translator (web/errors.py) renders them.

Categories follow FHIR R4 OperationOutcome issue types (valueset-issue-type) and
the HTTP statuses of R4 http.html section 3.1.0.4 / 3.1.0.5.
"""

from __future__ import annotations

import enum
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import exc as sa_exc

from connectors.errors import ConnectorError, Failure


class Category(enum.Enum):
    """What went wrong; value = (HTTP status, OperationOutcome issue code)."""

    INVALID = (400, "invalid")
    STRUCTURE = (400, "structure")
    REQUIRED = (400, "required")
    VALUE = (400, "value")
    NOT_SUPPORTED = (400, "not-supported")
    UNPROCESSABLE = (422, "processing")
    SECURITY = (401, "security")
    FORBIDDEN = (403, "forbidden")
    NOT_FOUND = (404, "not-found")
    METHOD_NOT_ALLOWED = (405, "not-supported")
    NOT_ACCEPTABLE = (406, "not-supported")
    CONFLICT = (409, "conflict")
    DELETED = (410, "deleted")
    PRECONDITION_FAILED = (412, "conflict")
    TOO_LARGE = (413, "too-costly")
    UNSUPPORTED_MEDIA_TYPE = (415, "not-supported")
    TOO_COSTLY = (403, "too-costly")
    TOO_MANY_REQUESTS = (429, "throttled")
    EXCEPTION = (500, "exception")
    TRANSIENT = (503, "transient")
    # An outside service this operation needs is not configured here (connectors/ NOT_CONFIGURED):
    # the server, not the request, is at fault, and retrying will not help until an operator acts.
    NOT_CONFIGURED = (503, "not-supported")
    BAD_GATEWAY = (502, "transient")
    GATEWAY_TIMEOUT = (504, "timeout")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def code(self) -> str:
        return self.value[1]


@dataclass
class Issue:
    """One OperationOutcome.issue."""

    severity: str
    code: str
    diagnostics: str
    expression: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = self.expression
        return out


class FhirError(Exception):
    """An error a client can be told about."""

    def __init__(
        self,
        category: Category,
        diagnostics: str,
        *,
        expression: list[str] | str | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.category = category
        self.diagnostics = diagnostics
        if isinstance(expression, str):
            expression = [expression]
        self.issues = issues or [Issue("error", category.code, diagnostics, expression)]
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return self.category.status


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def outcome_for(error: FhirError) -> dict[str, Any]:
    return operation_outcome(error.issues)


HTTP_CATEGORY = {
    400: Category.INVALID,
    401: Category.SECURITY,
    403: Category.FORBIDDEN,
    404: Category.NOT_FOUND,
    405: Category.METHOD_NOT_ALLOWED,
    406: Category.NOT_ACCEPTABLE,
    409: Category.CONFLICT,
    410: Category.DELETED,
    412: Category.PRECONDITION_FAILED,
    413: Category.TOO_LARGE,
    415: Category.UNSUPPORTED_MEDIA_TYPE,
    429: Category.TOO_MANY_REQUESTS,
}


def from_connector_error(exc: ConnectorError) -> FhirError:
    """An outside service failed (connectors/): 504 for a timeout, else 502; a service that is not
    configured 503 ``not-supported`` (no Retry-After: it will not come by itself); never a 500."""
    category = Category.GATEWAY_TIMEOUT if exc.failure is Failure.TIMEOUT else Category.BAD_GATEWAY
    if exc.failure is Failure.NOT_CONFIGURED:
        category = Category.NOT_CONFIGURED
    return FhirError(category, str(exc))


class DatabaseFileError(Exception):
    """A file the database needs beside it (storage/sidecar.py: the SQLite writer gate's lock file)
    cannot be opened, e.g. left by a command run as another user: 503 naming it (an operator must act)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# Retry-After (RFC 9110 section 10.2.3), in seconds, of a database that is busy (a lock held longer than
# the lock timeout, a statement cancelled by the statement timeout) or unreachable (restart, failover).
RETRY_AFTER_BUSY = 2
RETRY_AFTER_UNAVAILABLE = 5

# PostgreSQL SQLSTATEs (PostgreSQL 15 Appendix A) a retry can cure, and what the client is told.
_PG_BUSY = {
    "57014": "a statement ran longer than the database statement timeout",
    "55P03": "a lock was held longer than the database lock timeout",
    "40001": "a concurrent transaction conflicted (serialization failure)",
    "40P01": "a concurrent transaction conflicted (deadlock)",
    "25P03": "a transaction stayed idle longer than the database allows",
    "53300": "the database has no free connection",
}
# Class 08 (connection exception) and the server shutting down or starting up.
_PG_UNAVAILABLE = ("08", "57P01", "57P02", "57P03")
# More bound parameters than one statement may carry: libpq refuses to send it (psycopg
# OperationalError without SQLSTATE, "number of parameters must be between 0 and 65535"), SQLite
# answers "too many SQL variables" (SQLITE_MAX_VARIABLE_NUMBER). The request, not the database, is at
# fault: never "unreachable" (review 20 F6).
_TOO_MANY_PARAMETERS = ("number of parameters must be between", "too many SQL variables")
# SQLite result codes: SQLITE_BUSY (the write lock stayed taken beyond busy_timeout), SQLITE_LOCKED.
_SQLITE_BUSY = {5, 6}


def from_database_error(exc: BaseException) -> FhirError | None:
    """A database failure a retry can cure -> TRANSIENT (503 with Retry-After); a statement the request
    made too large for the database -> TOO_COSTLY (no retry will cure it); None for any other (a bug or
    a constraint: the caller answers 500). Accepts SQLAlchemy's wrappers and the raw DBAPI errors of
    the read path (storage.engine.open_reader)."""
    if isinstance(exc, sa_exc.TimeoutError):  # QueuePool: no connection freed in pool_timeout
        return _transient("every database connection is in use", RETRY_AFTER_BUSY)
    if isinstance(exc, DatabaseFileError):  # the file's name, not its directory (the log has the path)
        reason = f"the server cannot open {os.path.basename(exc.path)} beside the database ({exc.reason})"
        return _transient(reason, RETRY_AFTER_UNAVAILABLE)
    invalidated = False
    if isinstance(exc, sa_exc.DBAPIError):
        invalidated = exc.connection_invalidated
        exc = exc.orig or exc
    if isinstance(exc, sqlite3.OperationalError | psycopg.OperationalError) and any(
        text in str(exc) for text in _TOO_MANY_PARAMETERS
    ):
        return FhirError(
            Category.TOO_COSTLY,
            "The request needs more values in one database statement than the database accepts; "
            "split it into smaller requests",
        )
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if (code is not None and code & 0xFF in _SQLITE_BUSY) or "database is locked" in str(exc):
            return _transient("another writer held the lock beyond the lock timeout", RETRY_AFTER_BUSY)
        return None
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        if state in _PG_BUSY:
            return _transient(_PG_BUSY[state], RETRY_AFTER_BUSY)
        # No SQLSTATE: the connection failed or was lost (server restarted, refused, timed out).
        if state.startswith(_PG_UNAVAILABLE) or (not state and isinstance(exc, psycopg.OperationalError)):
            return _transient("the database is unreachable", RETRY_AFTER_UNAVAILABLE)
        if invalidated or isinstance(exc, psycopg.InterfaceError):  # e.g. "the connection is closed"
            return _transient("the database connection was lost", RETRY_AFTER_UNAVAILABLE)
    return None


def _transient(reason: str, retry_after: int) -> FhirError:
    return FhirError(
        Category.TRANSIENT,
        f"Database temporarily unavailable: {reason}; retry later",
        headers={"Retry-After": str(retry_after)},
    )
