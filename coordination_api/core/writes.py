"""Create, update, delete and their conditional forms (R4 http.html#create, #ccreate, #update,
#cond-update, #delete), framework-free.

Two levels. ``create``, ``update``, ``delete`` and their conditional forms are a client's write: the
type, the caller's SMART scopes, the body's validation, the write hooks, then one transaction. The
``*_in`` functions write inside a transaction the caller holds (the domain's writes, the entries of a
transaction Bundle): the caller has checked what it writes. Every other door of a client's write (PATCH,
transaction and batch entries) runs the write hooks too, with ``run_create_hooks`` / ``run_put_hooks`` /
``run_update_hooks``. Either way the repository runs its hooks (the care-team guard before and after,
the audit row, subscriptions, dispatch) in the transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.engine import Connection

from auth.policy import Principal
from coordination_api.core.principal import require
from coordination_api.core.services import PendingCreate, PendingUpdate, Services, WriteResult
from coordination_api.core.validation import check_type, validate_resource
from coordination_api.core.versions import parse_etag
from coordination_api.errors import Category, FhirError, Issue, operation_outcome
from coordination_api.search.executor import run_search
from coordination_api.storage.repository import Stored, new_id

_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


# -- conditional criteria ------------------------------------------------------------------------


def parse_criteria(criteria: str) -> list[tuple[str, str]]:
    text = criteria.split("?", 1)[1] if "?" in criteria else criteria
    params = parse_qsl(text, keep_blank_values=True)
    if not params:
        raise FhirError(Category.INVALID, f"Conditional criteria '{criteria}' has no search parameters")
    return params


def criteria_hash(resource_type: str, params: list[tuple[str, str]]) -> str:
    canonical = "&".join(f"{k}={v}" for k, v in sorted(params))
    return hashlib.sha256(f"{resource_type}?{canonical}".encode()).hexdigest()


def find_matches(
    conn: Connection, svc: Services, resource_type: str, params: list[tuple[str, str]], limit: int = 2
) -> list[Stored]:
    """Resources matching conditional criteria (unknown parameters are an error here), among those
    the caller may see: a conditional create, update, delete or reference answers alike whether or not
    data out of the caller's reach matches (issue 16: no existence oracle)."""
    query = svc.compiler.compile(resource_type, params, strict=True, hop_guard=svc.access.hop_guard)
    query.count = limit
    query.total = "none"
    query.includes, query.revincludes = [], []
    svc.access.secure(query)
    return run_search(conn, svc.repo, query).matches


def one_match(
    conn: Connection,
    svc: Services,
    resource_type: str,
    params: list[tuple[str, str]],
    several: Callable[[int], str],
    expression: str | None = None,
) -> Stored | None:
    """The resource conditional criteria name, or None; several matches are a 412 (R4 http.html
    3.1.0.8 to 3.1.0.10: conditional create, update and delete) whose diagnostic ``several`` writes."""
    matches = find_matches(conn, svc, resource_type, params)
    if len(matches) > 1:
        raise FhirError(Category.PRECONDITION_FAILED, several(len(matches)), expression=expression)
    return matches[0] if matches else None


# -- inside the caller's transaction -------------------------------------------------------------


def create_in(
    conn: Connection,
    svc: Services,
    resource_type: str,
    body: dict[str, Any],
    if_none_exist: str | None = None,
    res_id: str | None = None,
) -> WriteResult:
    """Create inside an open transaction. The server assigns the id (a client id is ignored, R4 3.1.0.7)."""
    if not if_none_exist:
        created = svc.repo.create(conn, resource_type, body, res_id)
        return WriteResult(201, svc.repo.latest(conn, created))
    params = parse_criteria(if_none_exist)
    key = criteria_hash(resource_type, params)
    for _attempt in range(4):
        match = one_match(
            conn,
            svc,
            resource_type,
            params,
            lambda n: f"If-None-Exist '{if_none_exist}' matches {n} resources; cannot create",
        )
        if match is not None:
            svc.access.check_stored(conn, match)  # the existing match is returned: it must be reachable
            return WriteResult(200, match)
        savepoint = conn.begin_nested()
        stored = svc.repo.create(conn, resource_type, body, res_id)
        if svc.repo.claim_conditional(conn, resource_type, key, stored.pk):
            savepoint.commit()
            return WriteResult(201, svc.repo.latest(conn, stored))
        # A concurrent writer created a match first (the database unique key decided): undo ours.
        savepoint.rollback()
        if not find_matches(conn, svc, resource_type, params):
            # The claim is stale (that resource no longer matches): release it and try again.
            svc.repo.release_conditional(conn, resource_type, key)
    raise FhirError(Category.CONFLICT, "Conditional create kept conflicting with concurrent writes; retry")


def check_id(res_id: str) -> None:
    """R4 datatypes.html#id: 1-64 characters of [A-Za-z0-9\\-\\.]."""
    if not res_id or len(res_id) > 64 or not set(res_id) <= _ID_CHARS:
        raise FhirError(Category.INVALID, f"'{res_id}' is not a valid resource id", expression="Resource.id")


def check_update_body(res_id: str, body: dict[str, Any]) -> None:
    """R4 http.html#update: the body carries an id, equal to the URL's."""
    check_id(res_id)
    body_id = body.get("id")
    if body_id is None:
        raise FhirError(
            Category.INVALID, "The resource in an update must carry an id", expression="Resource.id"
        )
    if body_id != res_id:
        raise FhirError(
            Category.INVALID,
            f"Body id '{body_id}' does not match the URL id '{res_id}'",
            expression="Resource.id",
        )


def update_in(
    conn: Connection,
    svc: Services,
    resource_type: str,
    res_id: str,
    body: dict[str, Any],
    if_match: int | None = None,
) -> WriteResult:
    check_update_body(res_id, body)
    stored, created = svc.repo.update(conn, resource_type, res_id, body, if_match)
    return WriteResult(201 if created else 200, svc.repo.latest(conn, stored))


def conditional_target(
    conn: Connection, svc: Services, resource_type: str, params: list[tuple[str, str]], body: dict[str, Any]
) -> str:
    """The id a conditional update writes to (R4 http.html#cond-update)."""
    match = one_match(
        conn, svc, resource_type, params, lambda n: f"Conditional update criteria match {n} resources"
    )
    body_id = body.get("id")
    if match is not None:
        target = match.res_id
        if body_id not in (None, target):
            raise FhirError(
                Category.INVALID,
                f"Body id '{body_id}' differs from the matching resource {resource_type}/{target}",
                expression="Resource.id",
            )
        return target
    if body_id is None:
        return new_id()
    existing = svc.repo.current(conn, resource_type, str(body_id))
    if existing is not None and not existing.deleted:
        # "No matches, id provided" is update-as-create; an id that exists and does not match the
        # criteria is a conflict (the R5 text makes this explicit: 409).
        raise FhirError(
            Category.CONFLICT,
            f"No resource matches the criteria, but {resource_type}/{body_id} exists and does not match them",
            expression="Resource.id",
        )
    return str(body_id)


def delete_in(
    conn: Connection, svc: Services, resource_type: str, res_id: str, if_match: int | None = None
) -> WriteResult:
    stored = svc.repo.delete(conn, resource_type, res_id, if_match)
    if stored is None:
        message = f"{resource_type}/{res_id} did not exist or was already deleted; nothing to do"
    else:
        message = f"{resource_type}/{res_id} deleted (version {stored.version})"
    return WriteResult(
        204 if stored is None else 200,
        stored,
        operation_outcome([Issue("information", "informational", message)]),
    )


def conditional_delete_in(
    conn: Connection, svc: Services, resource_type: str, params: list[tuple[str, str]]
) -> WriteResult:
    match = one_match(
        conn,
        svc,
        resource_type,
        params,
        lambda n: f"Conditional delete criteria match {n} resources; this server deletes one at a time",
    )
    if match is None:
        return WriteResult(204, None, operation_outcome([Issue("information", "informational", "No match")]))
    return delete_in(conn, svc, resource_type, match.res_id)


# -- a client's write: checks, hooks, one transaction -----------------------------------------------


def run_create_hooks(
    conn: Connection,
    svc: Services,
    who: Principal,
    resource_type: str,
    body: dict[str, Any],
    if_none_exist: str | None = None,
    res_id: str | None = None,
) -> PendingCreate:
    """The create hooks (e.g. an NdE intake) on a client's create, in its transaction: they may change
    the body and, on a POST (``res_id`` None), the conditional-create criteria."""
    pending = PendingCreate(resource_type, body, if_none_exist, who, res_id)
    for hook in svc.hooks.before_create:
        hook(conn, svc, pending)
    return pending


def run_update_hooks(
    conn: Connection,
    svc: Services,
    who: Principal,
    resource_type: str,
    res_id: str,
    body: dict[str, Any],
    current: Stored,
) -> dict[str, Any]:
    """The update hooks on a client's update of ``current``, in its transaction; the body to write."""
    pending = PendingUpdate(resource_type, res_id, body, current, who)
    for hook in svc.hooks.before_update:
        hook(conn, svc, pending)
    return pending.body


def run_put_hooks(
    conn: Connection,
    svc: Services,
    who: Principal,
    resource_type: str,
    res_id: str,
    body: dict[str, Any],
    current: Stored | None,
) -> dict[str, Any]:
    """A client's PUT of ``res_id`` (``current``: its current version, if any): the create hooks for
    an update-as-create (none, or a deleted one), the update hooks otherwise; the body to write."""
    if current is None or current.deleted:
        return run_create_hooks(conn, svc, who, resource_type, body, res_id=res_id).body
    return run_update_hooks(conn, svc, who, resource_type, res_id, body, current)


def authorize(who: Principal, resource_type: str, permission: str) -> None:
    """A type that takes writes (404, 405) and a token whose scopes allow ``permission`` on it (403)."""
    check_type(resource_type, write=True)
    require(who, resource_type, permission)


def require_criteria(params: list[tuple[str, str]], method: str) -> None:
    """A conditional update or delete names its criteria (405 without)."""
    if not params:
        kind = "update" if method == "PUT" else "delete"
        raise FhirError(
            Category.METHOD_NOT_ALLOWED, f"{method} on a type needs search criteria (conditional {kind})"
        )


def create(
    svc: Services,
    who: Principal,
    resource_type: str,
    body: Any,
    if_none_exist: str | None = None,
) -> WriteResult:
    """A create (conditional with ``if_none_exist``); the create hooks (e.g. an NdE intake) run in
    its transaction first and may change the body and the criteria."""
    authorize(who, resource_type, "c")
    resource = validate_resource(body, resource_type)
    resource.pop("id", None)
    with svc.repo.writing() as conn:
        pending = run_create_hooks(conn, svc, who, resource_type, resource, if_none_exist)
        return create_in(conn, svc, resource_type, pending.body, pending.if_none_exist)


def update(
    svc: Services, who: Principal, resource_type: str, res_id: str, body: Any, if_match: str | None = None
) -> WriteResult:
    """An update, or an update-as-create of a new id; ``if_match``: the If-Match header as sent."""
    authorize(who, resource_type, "u")
    resource = validate_resource(body, resource_type)
    version = parse_etag(if_match, "If-Match")
    check_update_body(res_id, resource)
    with svc.repo.writing() as conn:
        current = svc.repo.current(conn, resource_type, res_id)
        resource = run_put_hooks(conn, svc, who, resource_type, res_id, resource, current)
        return update_in(conn, svc, resource_type, res_id, resource, version)


def conditional_update(
    svc: Services,
    who: Principal,
    resource_type: str,
    params: list[tuple[str, str]],
    body: Any,
    if_match: str | None = None,
) -> WriteResult:
    authorize(who, resource_type, "u")
    require_criteria(params, "PUT")
    resource = validate_resource(body, resource_type)
    version = parse_etag(if_match, "If-Match")
    with svc.repo.writing() as conn:
        res_id = conditional_target(conn, svc, resource_type, params, resource)
        current = svc.repo.current(conn, resource_type, res_id)
        resource = run_put_hooks(conn, svc, who, resource_type, res_id, {**resource, "id": res_id}, current)
        return update_in(conn, svc, resource_type, res_id, resource, version)


def delete(
    svc: Services, who: Principal, resource_type: str, res_id: str, if_match: str | None = None
) -> WriteResult:
    authorize(who, resource_type, "d")
    version = parse_etag(if_match, "If-Match")
    with svc.repo.writing() as conn:
        return delete_in(conn, svc, resource_type, res_id, version)


def conditional_delete(
    svc: Services, who: Principal, resource_type: str, params: list[tuple[str, str]]
) -> WriteResult:
    authorize(who, resource_type, "d")
    require_criteria(params, "DELETE")
    with svc.repo.writing() as conn:
        return conditional_delete_in(conn, svc, resource_type, params)
