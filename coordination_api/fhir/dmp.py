"""``POST [base]/DocumentReference/[id]/$dmp-push``: send a document to the DMP through a PDSm (IHE
MHD ITI-65, connectors/mhd), through the connector-jobs outbox.

The request is checked at once (the caller may read and update the document and reach its patient;
the patient has a qualified INS, VALI or QUAL, which the DMP requires; the document has content);
then one transaction records ``requested`` on the DocumentReference and queues the job: 202. The
worker sends the ITI-65 Bundle and records the outcome on the DocumentReference (our extension
``dmp-submission``: status requested | sent | failed | not-sent, date, the recipient's location or its
reason). A recipient that is down or slow is retried with backoff; one that refuses ends the job
(dead-letter) with ``failed`` recorded. With no DMP configured the push is refused at once (503
``not-supported``, nothing queued); a job queued before the DMP was unconfigured ends ``not-sent``
with that reason (never ``sent``: issue 19).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from sqlalchemy.engine import Connection

from connectors.mhd import NOT_CONFIGURED, DocumentRecipient
from coordination_api import jobs
from coordination_api.core.validation import validate_resource
from coordination_api.core.writes import update_in
from coordination_api.errors import Category, FhirError, Issue, operation_outcome
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.integrations.dmp import (
    PUSH,
    document_content,
    qualified_ins,
    subject_patient,
    submission_status,
    with_submission,
)
from coordination_api.storage.repository import Stored
from coordination_api.web.http import base_url, fhir_json_response


def _check_binary(conn: Connection, binary: Stored) -> None:
    access.require("Binary", "r")
    access.check_stored(conn, binary)


def _unprocessable(message: str, expression: str | None = None) -> FhirError:
    return FhirError(Category.UNPROCESSABLE, message, expression=expression)


# -- the operation ------------------------------------------------------------------------------


def dmp_push(res_id: str) -> Response:
    access.require("DocumentReference", "r")
    access.require("DocumentReference", "u")
    recipient: DocumentRecipient = current_app.extensions["dmp"]
    if not recipient.configured:
        raise FhirError(Category.NOT_CONFIGURED, f"{NOT_CONFIGURED}: nothing was queued")
    stored, reach = access.read_current("DocumentReference", res_id)
    if stored is None:
        raise FhirError(Category.NOT_FOUND, f"DocumentReference/{res_id} is not known")
    if stored.deleted:
        raise FhirError(Category.DELETED, f"DocumentReference/{res_id} was deleted")
    access.check_reach(stored, reach)
    document = stored.json()
    force = request.args.get("force", "").lower() == "true"
    if submission_status(document) == "sent" and not force:
        raise FhirError(
            Category.CONFLICT,
            f"DocumentReference/{res_id} was already sent to the DMP; add ?force=true to send it again",
        )
    svc = services()
    patient_id = subject_patient(document)
    if patient_id is None:
        raise _unprocessable("the document has no subject Patient", "DocumentReference.subject")
    with svc.repo.reading() as conn:
        patient = svc.repo.current(conn, "Patient", patient_id)
        if patient is None or patient.deleted:
            raise _unprocessable(
                f"the subject Patient/{patient_id} is not known", "DocumentReference.subject"
            )
        if qualified_ins(patient.json()) is None:
            raise _unprocessable(
                "the DMP requires the patient's INS with a validated or qualified identity (VALI or QUAL)",
                "Patient.identifier",
            )
        if document_content(svc.repo, conn, document, patient_id, _check_binary) is None:
            raise _unprocessable(
                "the document has no content to send (attachment.data, or attachment.url naming a "
                "Binary of this server whose securityContext is this document or its patient)",
                "DocumentReference.content.attachment",
            )
    with svc.repo.writing() as conn:
        if jobs.enqueue(conn, PUSH, {"document": res_id}, key=res_id):
            new = validate_resource(
                {**with_submission(document, "requested"), "id": res_id}, "DocumentReference"
            )
            update_in(conn, svc, "DocumentReference", res_id, new, if_match=stored.version)
    outcome = operation_outcome([Issue("information", "informational", "queued for the DMP")])
    headers = {"Content-Location": f"{base_url()}/DocumentReference/{res_id}"}
    return fhir_json_response(outcome, 202, headers)


def register_routes(bp: Blueprint) -> None:
    bp.add_url_rule("/DocumentReference/<res_id>/$dmp-push", "dmp_push", dmp_push, methods=["POST"])
