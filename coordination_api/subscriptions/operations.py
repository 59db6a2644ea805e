"""$status and $events (Backport IG OperationDefinitions backport-subscription-status and
backport-subscription-events)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, current_app, request
from sqlalchemy import select
from sqlalchemy.engine import Connection, Row

from coordination_api.core.versions import version_number
from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.fhir.operation_input import parameters_body, primitive_value
from coordination_api.storage.repository import now_us
from coordination_api.storage.schema import subscription_outbox, subscription_state
from coordination_api.subscriptions import model, notify
from coordination_api.subscriptions.service import SubscriptionService, effective_status
from coordination_api.web.http import base_url, fhir_json_response


def _service() -> SubscriptionService:
    svc: SubscriptionService = current_app.extensions["subscriptions"]
    return svc


def _params() -> list[tuple[str, str]]:
    """Operation parameters: the query string, plus a Parameters body on POST (R4 operations.html)."""
    out = [(k, v) for k, values in request.args.lists() for v in values]
    for param in parameters_body():
        value = primitive_value(param)
        if value is not None:
            out.append((str(param.get("name")), str(value)))
    return out


def _state(conn: Connection, res_id: str) -> tuple[Row[Any], model.Spec]:
    st = subscription_state
    # Someone else's subscription is as unknown as a missing one (no existence oracle).
    row = conn.execute(
        select(st).where(st.c.res_id == res_id, *access.subscription_owner_filter(st.c.res_pk))
    ).first()
    compiled = _service().compiled(conn, row.res_pk, row.version, row.res_id) if row is not None else None
    if row is None or compiled is None:
        raise FhirError(Category.NOT_FOUND, f"Subscription/{res_id} is not known to the notification service")
    return row, compiled.spec


def _status(row: Row[Any]) -> str:
    return effective_status(row.status, row.end_us, now_us())


def _status_entry(row: Row[Any], spec: model.Spec, base: str) -> dict[str, Any]:
    parameters = notify.status_parameters(
        notify.Notice(spec, _status(row), "query-status", row.events, [], "empty", base)
    )
    if row.error:
        parameters["parameter"].append({"name": "error", "valueCodeableConcept": {"text": row.error}})
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": parameters, "search": {"mode": "match"}}


def status(res_id: str | None = None) -> Response:
    """Subscription/[id]/$status and Subscription/$status?id=…&status=… → searchset of SubscriptionStatus."""
    access.require("Subscription", "r")
    params = _params()
    ids = [v for k, v in params if k == "id"]
    wanted = {s for k, v in params if k == "status" for s in v.split(",")}
    if res_id is not None:
        ids = [res_id]
    base = base_url()
    entries = []
    repo = _service().repo
    with repo.reading() as conn:
        if ids:
            found = [_state(conn, i) for i in ids]
        else:
            # The caller's own subscriptions (owner filter in SQL, before the limit); deleted or
            # unparsable ones are skipped, not an error for the whole list.
            st = subscription_state
            rows = conn.execute(
                select(st.c.res_id)
                .where(*access.subscription_owner_filter(st.c.res_pk))
                .order_by(st.c.res_pk)
                .limit(1000)
            ).scalars()
            found = []
            for listed in rows:
                try:
                    found.append(_state(conn, listed))
                except FhirError:
                    continue
        for row, spec in found:
            if not wanted or _status(row) in wanted:
                entries.append(_status_entry(row, spec, base))
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return fhir_json_response(bundle)


def _number(params: list[tuple[str, str]], name: str) -> int | None:
    values = [v for k, v in params if k == name]
    if not values:
        return None
    try:
        return int(values[-1])
    except ValueError as exc:
        raise FhirError(Category.INVALID, f"{name} must be an event number, not '{values[-1]}'") from exc


def _may_read(conn: Connection, svc: Any, focus: str) -> bool:
    """The reader may read the focus's version (the one the event is about, judged by its own
    compartments, as a vread would be)."""
    parts = focus.split("/")
    res_type, res_id = parts[:2]
    if not access.readable(res_type):
        return False
    number = version_number(parts[3]) if len(parts) > 3 else None
    if number is not None:
        stored = svc.repo.version(conn, res_type, res_id, number)
    else:
        stored = svc.repo.current(conn, res_type, res_id)
    if stored is None:
        return False
    try:
        access.check_version(conn, stored)
    except FhirError:
        return False
    return True


def events(res_id: str) -> Response:
    """Subscription/[id]/$events: past notifications replayed from the outbox (a history Bundle)."""
    access.require("Subscription", "r")
    params = _params()
    since = _number(params, "eventsSinceNumber")
    until = _number(params, "eventsUntilNumber")
    contents = [v for k, v in params if k == "content"]
    svc = _service()
    o = subscription_outbox
    with svc.repo.reading() as conn:
        row, spec = _state(conn, res_id)
        content = contents[-1] if contents else spec.content
        if content not in model.CONTENTS:
            raise FhirError(Category.INVALID, f"content must be one of {', '.join(model.CONTENTS)}")
        stmt = select(o.c.event_number, o.c.focus, o.c.created_us).where(o.c.sub_pk == row.res_pk)
        if since is not None:
            stmt = stmt.where(o.c.event_number >= since)
        if until is not None:
            stmt = stmt.where(o.c.event_number <= until)
        rows = conn.execute(stmt.order_by(o.c.event_number).limit(svc.config.max_events)).all()
        found = [notify.Event(r.event_number, r.focus, r.created_us) for r in rows]
        # The reader's scopes and care-team rule apply to replayed events: nothing, not even an id,
        # about a resource the reader may not read now (issue 16).
        found = [e for e in found if _may_read(conn, svc, e.focus)]
        resources = notify.focus_versions(svc.repo, conn, found) if content == "full-resource" else {}
    notice = notify.Notice(spec, _status(row), "query-event", row.events, found, content, base_url())
    bundle = notify.bundle(notice, resources)
    return fhir_json_response(bundle)
