"""The HTTP side of $export (Bulk Data Access IG 2.0.0 export.html): kick-off at system, Patient and
Group level, status polling and DELETE, file download. All on the FHIR blueprint: the same bearer
authentication and audit trail as every other interaction.

Only the client that kicked a job off may poll, download or delete it: to any other a job is as unknown
as a missing one (404, no existence oracle).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from flask import Blueprint, Response, g, request
from sqlalchemy import select

from auth.policy import Principal
from coordination_api.bulk import jobs
from coordination_api.bulk.files import JOB_ID, Progress, job_dir, remove_job_files, stream
from coordination_api.bulk.kickoff import ExportParams, KickOff, check_exporter, parse
from coordination_api.errors import Category, FhirError, Issue, operation_outcome
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.search.dates import format_http_date, format_instant
from coordination_api.storage.repository import now_us
from coordination_api.storage.schema import resource
from coordination_api.web.http import base_url, fhir_json_response

IG = "http://hl7.org/fhir/uv/bulkdata"
NDJSON = "application/fhir+ndjson"
# The download answers NDJSON: the blueprint's JSON Accept check does not apply to it (views.download).
NDJSON_ENDPOINTS = frozenset({"fhir.bulk_export_file"})
_NDJSON_ACCEPT = {NDJSON, "application/ndjson", "ndjson", "application/x-ndjson", "*/*", "application/*"}
_PATIENT_REF = re.compile(r"^(?:.*/)?Patient/([A-Za-z0-9\-.]{1,64})$")

# CapabilityStatement (fhir/capabilities.py): the IG's server CapabilityStatement and its operations.
INSTANTIATES = f"{IG}/CapabilityStatement/bulk-data"
SYSTEM_OPERATIONS = [{"name": "export", "definition": f"{IG}/OperationDefinition/export"}]
TYPE_OPERATIONS: dict[str, list[dict[str, str]]] = {
    "Patient": [{"name": "export", "definition": f"{IG}/OperationDefinition/patient-export"}],
    "Group": [{"name": "export", "definition": f"{IG}/OperationDefinition/group-export"}],
}


def register_routes(bp: Blueprint) -> None:
    """The routes on the FHIR blueprint (static segments win over /<type>/<id>)."""
    methods = ["GET", "POST"]
    bp.add_url_rule("/$export", "bulk_export_system", export_system, methods=methods)
    bp.add_url_rule("/Patient/$export", "bulk_export_patient", export_patient, methods=methods)
    bp.add_url_rule("/Group/<group_id>/$export", "bulk_export_group", export_group, methods=methods)
    bp.add_url_rule("/$export-status/<job_id>", "bulk_export_status", status, methods=["GET", "DELETE"])
    bp.add_url_rule("/$export-file/<job_id>/<name>", "bulk_export_file", download, methods=["GET"])


# -- kick-off (export.html#bulk-data-kick-off-request) ----------------------------------------------


def export_system() -> Response:
    return _kick_off("system")


def export_patient() -> Response:
    return _kick_off("patient")


def export_group(group_id: str) -> Response:
    return _kick_off("group", group_id)


def _kick_off(level: str, group_id: str | None = None) -> Response:
    if request.method == "HEAD":  # Flask would answer HEAD with the GET view: a HEAD starts nothing
        raise FhirError(
            Category.METHOD_NOT_ALLOWED,
            "A Bulk Data kick-off is a GET or a POST",
            headers={"Allow": "GET, POST"},
        )
    who = check_exporter()
    kick = parse(level, who)
    patients = kick.patients
    if level == "group":
        assert group_id is not None
        patients = _group_members(group_id, patients, kick.params)
    elif patients is not None:
        _check_patients(patients)
    kick.params.limited = patients is not None
    _audit(kick, group_id)
    svc = services()
    job_id = jobs.create(
        svc.repo.engine,
        svc.settings.export,
        owner=None if who.unrestricted else who.client_id,
        level=level,
        request_url=kick.request_url,
        params=kick.params.to_json(),
        transaction_us=now_us(),
        patients=patients,
    )
    issues = [Issue("information", "informational", "Export accepted; poll the Content-Location URL")]
    issues += [Issue("warning", "not-supported", note) for note in kick.params.notes]
    return fhir_json_response(
        operation_outcome(issues), 202, {"Content-Location": f"{base_url()}/$export-status/{job_id}"}
    )


def _group_members(group_id: str, asked: list[str] | None, params: ExportParams) -> list[str]:
    """The Patients of Group.member.entity (inactive members left out), or the asked ones among them."""
    access.require("Group", "r")
    stored = services().repo.read_current("Group", group_id)
    if stored is None or stored.deleted:
        raise FhirError(Category.NOT_FOUND, f"Group/{group_id} is not known")
    members: list[str] = []
    others = 0
    for member in stored.json().get("member") or []:
        ref = (member.get("entity") or {}).get("reference")
        match = _PATIENT_REF.match(ref) if isinstance(ref, str) else None
        if match is None:
            others += 1
        elif member.get("inactive") is not True:
            members.append(match.group(1))
    if others:
        params.notes.append(f"Group/{group_id}: {others} member(s) that are not Patients were left out")
    if asked is None:
        return list(dict.fromkeys(members))
    outside = [p for p in asked if p not in set(members)]
    if outside:
        raise FhirError(
            Category.INVALID,
            f"patient Patient/{outside[0]} is not an active member of Group/{group_id}",
            expression="patient",
        )
    return asked


def _check_patients(ids: list[str]) -> None:
    """export.html "patient": asking for patients the server does not have is an error."""
    with services().repo.reading() as conn:
        known: set[str] = set()
        for start in range(0, len(ids), 500):
            known.update(
                conn.scalars(
                    select(resource.c.res_id).where(
                        resource.c.res_type == "Patient",
                        resource.c.res_id.in_(ids[start : start + 500]),
                        resource.c.deleted.is_(False),
                    )
                )
            )
    missing = [p for p in ids if p not in known]
    if missing:
        raise FhirError(Category.INVALID, f"patient Patient/{missing[0]} is not known", expression="patient")


def _audit(kick: KickOff, group_id: str | None) -> None:
    record = g.get("audit")
    if record is None:
        return
    if group_id is not None:
        record.add_entity(f"Group/{group_id}")
    if kick.patients:
        record.patients.update(kick.patients)
    record.query = orjson.dumps({"request": kick.request_url, "params": kick.params.to_json()}).decode()


# -- status, cancel (export.html#bulk-data-status-request, #bulk-data-delete-request) ---------------


def _owned(job_id: str, who: Principal) -> Any:
    """The job, if this client kicked it off and it has not expired; else 404."""
    row = None
    if JOB_ID.match(job_id):
        with services().repo.reading() as conn:
            row = jobs.find(conn, job_id)
    if (
        row is None
        or not (who.unrestricted or row.owner_client == who.client_id)
        or row.status == "cancelled"
        or (row.expires_us is not None and row.expires_us < now_us())
    ):
        raise FhirError(Category.NOT_FOUND, f"Export job '{job_id}' is not known (or has expired)")
    return row


def status(job_id: str) -> Response:
    who = check_exporter()
    row = _owned(job_id, who)
    svc = services()
    settings = svc.settings.export
    if request.method == "DELETE":
        if jobs.cancel(svc.repo.engine, row.pk):
            remove_job_files(settings, row.job_id)
        outcome = operation_outcome([Issue("information", "informational", "Export cancelled")])
        return fhir_json_response(outcome, 202)
    if row.status == "failed":
        # export.html "Response - Error Status": 5XX with an OperationOutcome.
        raise FhirError(Category.EXCEPTION, f"The export failed: {row.error or 'see the server log'}")
    progress = Progress.from_json(row.progress)
    if row.status == "pending":
        share = min(99, int(100 * progress.last_pk / row.max_pk)) if row.max_pk else 0
        text = "queued" if row.progress is None else f"{share}% ({progress.written} resources written)"
        return fhir_json_response(None, 202, {"X-Progress": text, "Retry-After": str(settings.poll_interval)})
    return _manifest(row, progress)


def _manifest(row: Any, progress: Progress) -> Response:
    """export.html "Response - Complete Status"."""
    params = ExportParams.from_json(row.params)
    files_url = f"{base_url()}/$export-file/{row.job_id}"

    def items(kind: str) -> list[dict[str, Any]]:
        chosen = sorted((f for f in progress.files if f.kind == kind), key=lambda f: f.type)
        return [{"type": f.type, "url": f"{files_url}/{f.name}", "count": f.count} for f in chosen]

    body: dict[str, Any] = {
        "transactionTime": format_instant(row.transaction_us),
        "request": row.request_url,
        "requiresAccessToken": True,
        "output": items("output"),
    }
    if params.since_us is not None:
        body["deleted"] = items("deleted")
    body["error"] = items("error")
    response = Response(orjson.dumps(body), 200, content_type="application/json")
    response.headers["Expires"] = format_http_date(row.expires_us)
    return response


# -- download (export.html#file-request) -------------------------------------------------------------


def download(job_id: str, name: str) -> Response:
    who = check_exporter()
    accept = request.headers.get("Accept", "").strip()
    if accept and not any(item.split(";")[0].strip().lower() in _NDJSON_ACCEPT for item in accept.split(",")):
        raise FhirError(Category.NOT_ACCEPTABLE, f"Accept '{accept}': export files are {NDJSON}")
    row = _owned(job_id, who)
    progress = Progress.from_json(row.progress)
    state = progress.file(name) if row.status == "completed" else None
    if state is None:
        raise FhirError(Category.NOT_FOUND, f"Export file '{name}' is not known")
    if state.kind == "output":
        access.require(state.type, "r")  # the token now presented may have narrower scopes
    path = job_dir(services().settings.export, row.job_id) / state.name
    if not path.is_file():
        raise FhirError(
            Category.NOT_FOUND,
            f"Export file '{name}' is not in this server's export directory (with several app processes "
            "COORDINATION_EXPORT_DIR must be a volume they share)",
        )
    record = g.get("audit")
    if record is not None:
        record.query = f"$export-file/{row.job_id}/{state.name}"
    response = Response(stream(path, state.bytes), 200, mimetype=NDJSON, direct_passthrough=True)
    response.headers["Content-Length"] = str(state.bytes)
    return response
