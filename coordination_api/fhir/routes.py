"""URL rules of the FHIR REST API (R4 http.html#summary); views stay thin."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, request

from coordination_api import subscriptions
from coordination_api.bulk import views as bulk
from coordination_api.errors import Category, FhirError
from coordination_api.fhir import (
    access,
    apply,
    audit_trail,
    capabilities,
    create,
    delete,
    dmp,
    everything,
    history,
    messaging,
    patch,
    read,
    search,
    transaction,
    update,
    validate,
)
from coordination_api.web.http import check_accept, install_page_signer

bp = Blueprint("fhir", __name__, url_prefix="/fhir")
subscriptions.register_routes(bp)  # $status, $events (static rules win over /<type>/<id>)
apply.register_routes(bp)  # PlanDefinition $apply, $start
everything.register_routes(bp)  # Patient/[id]/$everything, Encounter/[id]/$everything
bulk.register_routes(bp)  # Bulk Data $export, its status and files
dmp.register_routes(bp)  # DocumentReference $dmp-push (IHE MHD ITI-65)


bp.before_request(install_page_signer)  # _page tokens are signed (search/paging.py)


@bp.before_request
def _negotiate() -> None:
    if request.endpoint not in bulk.NDJSON_ENDPOINTS:  # export files are NDJSON
        check_accept()
    access.authenticate()
    # An id, version or job in the path is text no database stores with control characters (PostgreSQL
    # refuses NUL outright): 400 here, for every route, rather than a driver error later.
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise FhirError(Category.INVALID, f"The URL's {name} must not contain control characters")


@bp.after_request
def _audit(response: Response) -> Response:
    return access.audit_response(response)


@bp.get("/metadata")
def metadata() -> Response:
    return capabilities.metadata()


@bp.route("", methods=["GET", "POST"], strict_slashes=False)
def system() -> Response:
    if request.method == "POST":
        return transaction.transaction_or_batch()
    raise FhirError(Category.NOT_SUPPORTED, "System-level search is not supported; search a resource type")


@bp.get("/_history")
def system_history() -> Response:
    return history.history()


@bp.post("/$process-message")
def process_message() -> Response:
    return messaging.process_message()


# Names the spec reserves beside resource types and ids (R4 http.html#styleguide), and their methods.
_RESERVED = {"metadata": "GET, HEAD", "_history": "GET, HEAD", "_search": "POST"}


def _refuse_reserved(segment: str) -> None:
    """``DELETE /fhir/metadata``, ``PUT /fhir/Patient/_history``…: 405 rather than a type or id lookup."""
    allowed = _RESERVED.get(segment)
    if allowed is not None:
        raise FhirError(
            Category.METHOD_NOT_ALLOWED,
            f"Method {request.method} is not allowed on {request.path}; allowed: {allowed}",
            headers={"Allow": allowed},
        )


@bp.route("/<resource_type>", methods=["GET", "POST", "PUT", "DELETE"])
def type_level(resource_type: str) -> Response:
    _refuse_reserved(resource_type)
    # Flask answers HEAD with the GET view (body dropped): HEAD must never reach a write.
    match request.method:
        case "GET" | "HEAD":
            if resource_type == audit_trail.TYPE:
                return audit_trail.search()
            return search.search(resource_type)
        case "POST":
            return create.create(resource_type)
        case "PUT":
            return update.conditional_update(resource_type)
        case "DELETE":
            return delete.conditional_delete(resource_type)
    raise FhirError(Category.METHOD_NOT_ALLOWED, f"Method {request.method} is not allowed here")


@bp.post("/<resource_type>/$validate")
def validate_type(resource_type: str) -> Response:
    return validate.validate_type(resource_type)


@bp.route("/<resource_type>/<res_id>/$validate", methods=["GET", "POST"])
def validate_instance(resource_type: str, res_id: str) -> Response:
    return validate.validate_instance(resource_type, res_id)


@bp.post("/<resource_type>/_search")
def search_post(resource_type: str) -> Response:
    if resource_type == audit_trail.TYPE:
        return audit_trail.search()
    return search.search(resource_type)


@bp.get("/<resource_type>/_history")
def type_history(resource_type: str) -> Response:
    if resource_type == audit_trail.TYPE:
        return audit_trail.history()
    return history.history(resource_type)


@bp.route("/<resource_type>/<res_id>", methods=["GET", "PUT", "PATCH", "DELETE"])
def instance(resource_type: str, res_id: str) -> Response:
    _refuse_reserved(res_id)
    match request.method:
        case "GET" | "HEAD":
            if resource_type == audit_trail.TYPE:
                return audit_trail.read(res_id)
            return read.read(resource_type, res_id)
        case "PUT":
            return update.update(resource_type, res_id)
        case "PATCH":
            return patch.patch(resource_type, res_id)
        case "DELETE":
            return delete.delete(resource_type, res_id)
    raise FhirError(Category.METHOD_NOT_ALLOWED, f"Method {request.method} is not allowed here")


@bp.get("/<resource_type>/<res_id>/_history")
def instance_history(resource_type: str, res_id: str) -> Response:
    if resource_type == audit_trail.TYPE:
        return audit_trail.history()
    return history.history(resource_type, res_id)


@bp.get("/<resource_type>/<res_id>/_history/<version_id>")
def vread(resource_type: str, res_id: str, version_id: str) -> Response:
    if resource_type == audit_trail.TYPE:
        return audit_trail.read(res_id, version_id)
    return read.vread(resource_type, res_id, version_id)


def register(app: Flask) -> None:
    app.register_blueprint(bp)
