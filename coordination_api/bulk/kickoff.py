"""The kick-off request: its parameters, and who may export what (Bulk Data Access IG 2.0.0,
export.html#bulk-data-kick-off-request; SMART Backend Services for the tokens).

Only backend services export: a system-level token (``system/`` scopes). The types exported are those
its scopes allow to read: a type asked for in ``_type`` (or ``_typeFilter``) that they do not allow is a
403; without ``_type`` the export is silently limited to the allowed ones.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from flask import request

from auth.policy import Principal
from coordination_api.errors import Category, FhirError
from coordination_api.fhir import access
from coordination_api.fhir.context import services
from coordination_api.fhir.operation_input import parameters_body
from coordination_api.fhir.resources import READ_ONLY_TYPES, SERVER_WRITTEN_TYPES, supported_types
from coordination_api.search.dates import InvalidDateError, parse_range
from coordination_api.storage.indexer import outside_compartments
from coordination_api.web.http import base_url, prefer

# export.html "Query Parameters": _outputFormat SHALL accept these three (the NDJSON aliases).
OUTPUT_FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
# Parameters of the IG's OperationDefinitions this server does not implement: refused, or ignored
# with a note under ``Prefer: handling=lenient`` (export.html "Query Parameters").
NOT_IMPLEMENTED = {"_elements", "includeAssociatedData"}
HTTP_ONLY = {"_format", "_pretty"}
# _typeFilter: a search, not paging, sorting, includes or projections (export.html "_typeFilter").
FILTER_CONTROLS = {
    "_include",
    "_revinclude",
    "_sort",
    "_count",
    "_summary",
    "_elements",
    "_total",
    "_contained",
}
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
# Several _typeFilter queries in one value are separated by commas that start a new "Type?" (a comma
# inside a query separates OR values: ``Observation?status=final,amended``).
_QUERY_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]+\?)")
_REFERENCE = re.compile(r"^(?:.*/)?Patient/([A-Za-z0-9\-.]{1,64})$")


@dataclass
class ExportParams:
    """A parsed kick-off, as the job keeps it (JSON in ``bulk_export_job.params``)."""

    types: list[str]
    since_us: int | None = None
    # Type -> the _typeFilter queries of that type (a resource matching any of them is exported).
    type_filters: dict[str, list[str]] = field(default_factory=dict)
    output_format: str = "application/fhir+ndjson"
    base: str = ""
    # Limited to the job's bulk_export_patient rows (Group level, or the ``patient`` parameter).
    limited: bool = False
    # Said back in the manifest's error file (parameters ignored under handling=lenient…).
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str) -> ExportParams:
        return cls(**orjson.loads(text))


@dataclass
class KickOff:
    level: str  # system | patient | group
    params: ExportParams
    patients: list[str] | None  # ids the export is limited to (None: every patient)
    request_url: str


def _bad(message: str, expression: str | None = None) -> FhirError:
    return FhirError(Category.INVALID, message, expression=expression)


def check_exporter() -> Principal:
    """SMART Backend Services: only a system-level token exports (403 for user and patient tokens)."""
    who = access.principal()
    if who.unrestricted:
        return who
    if who.is_user or who.patient_id is not None or "system" not in who.scopes.contexts():
        raise FhirError(
            Category.FORBIDDEN,
            "Bulk Data export is for backend services: it needs a system-level access token "
            "(SMART Backend Services, system/ scopes such as system/*.rs); user and patient tokens "
            "cannot export",
        )
    return who


def readable_types(who: Principal) -> frozenset[str]:
    """The types this token may read (system/…r… scopes, v1 .read included)."""
    exportable = supported_types() - SERVER_WRITTEN_TYPES
    if who.unrestricted:
        return frozenset(exportable)
    return frozenset(t for t in exportable if who.scopes.allows(t, "r", ("system",)))


def _raw_params() -> list[tuple[str, str]]:
    """(name, value) of the query string and, for POST, of the Parameters body (export.html: POST)."""
    out = [(k, v) for k, v in request.args.items(multi=True) if k not in HTTP_ONLY]
    for param in parameters_body():
        name = str(param.get("name", ""))
        value: Any = next((v for k, v in param.items() if k.startswith("value")), None)
        if isinstance(value, dict):  # valueReference
            value = value.get("reference")
        if not isinstance(value, str | bool) or value == "":
            raise _bad(f"Parameter '{name}' needs a value", f"Parameters.parameter('{name}')")
        out.append((name, str(value).lower() if isinstance(value, bool) else value))
    return out


def _instant(value: str) -> int:
    # A '+' left unencoded in a query string arrives as a space.
    text = value.strip().replace(" ", "+")
    if not _INSTANT.match(text):
        raise _bad(f"_since '{value}' is not a FHIR instant (e.g. 2024-01-01T00:00:00Z)", "_since")
    try:
        return parse_range(text)[0]
    except InvalidDateError as exc:
        raise _bad(f"_since '{value}' is not a valid instant: {exc}", "_since") from exc


def _type_filter(value: str, base: str) -> list[tuple[str, str]]:
    """``Type?query`` items, each checked by compiling it as a search of that type (400 if bad)."""
    compiler = services().compiler
    out: list[tuple[str, str]] = []
    for item in _QUERY_SPLIT.split(value):
        rtype, sep, query = item.strip().partition("?")
        if not sep or not rtype or not query:
            raise _bad(f"_typeFilter '{item}' is not a search of the form Type?param=value", "_typeFilter")
        if rtype not in supported_types() or rtype in SERVER_WRITTEN_TYPES:
            raise _bad(f"_typeFilter names an unknown or unsupported resource type '{rtype}'", "_typeFilter")
        pairs = parse_qsl(query, keep_blank_values=True)
        if not pairs:
            raise _bad(f"_typeFilter '{item}' has no search parameter", "_typeFilter")
        for name, _value in pairs:
            if name.split(":")[0] in FILTER_CONTROLS or name.startswith(("_include", "_revinclude")):
                raise _bad(
                    f"_typeFilter '{item}': '{name}' is not allowed in an export filter", "_typeFilter"
                )
        try:
            # Every chain or _has hop of a filter reads its type: the client's scopes must allow it.
            compiler.compile(rtype, pairs, base_url=base, strict=True, hop_guard=access.hop_guard)
        except FhirError as exc:
            if exc.category is Category.FORBIDDEN:
                raise
            raise _bad(f"_typeFilter '{item}': {exc.diagnostics}", "_typeFilter") from exc
        out.append((rtype, query))
    return out


def _patient_ids(values: list[str]) -> list[str]:
    ids: list[str] = []
    for value in values:
        for ref in (v.strip() for v in value.split(",")):
            match = _REFERENCE.match(ref)
            if match is None:
                raise _bad(f"patient '{ref}' is not a Patient reference (Patient/[id])", "patient")
            ids.append(match.group(1))
    return list(dict.fromkeys(ids))


def parse(level: str, who: Principal) -> KickOff:
    """The kick-off's parameters, checked; every refusal is a 4xx OperationOutcome."""
    # export.html "Headers": Prefer: respond-async is required.
    if prefer("respond-async") is None:
        raise _bad("A Bulk Data kick-off needs the header 'Prefer: respond-async'", "Prefer")
    lenient = prefer("handling") == "lenient"
    base = base_url()
    notes: list[str] = []
    since: int | None = None
    asked_types: list[str] | None = None
    filters: list[tuple[str, str]] = []
    patient_values: list[str] = []
    for name, value in _raw_params():
        if "\x00" in name or "\x00" in value:
            raise _bad("Parameters must not contain NUL characters")
        if name == "_outputFormat":
            if value.strip().lower() not in OUTPUT_FORMATS:
                raise _bad(
                    f"_outputFormat '{value}' is not supported; use application/fhir+ndjson", "_outputFormat"
                )
        elif name == "_since":
            since = _instant(value)
        elif name == "_type":
            named = [t.strip() for t in value.split(",") if t.strip()]
            if not named:
                raise _bad("_type needs at least one resource type", "_type")
            asked_types = (asked_types or []) + named
        elif name == "_typeFilter":
            filters += _type_filter(value, base)
        elif name == "patient":
            patient_values.append(value)
        else:
            why = (
                "is not supported by this server" if name in NOT_IMPLEMENTED else "is not a $export parameter"
            )
            if not lenient:
                raise _bad(
                    f"Parameter '{name}' {why}; send 'Prefer: handling=lenient' to have it ignored", name
                )
            notes.append(f"Parameter '{name}' {why}; it was ignored (Prefer: handling=lenient)")
    types = _types(level, who, asked_types, filters, lenient, notes)
    type_filters: dict[str, list[str]] = {}
    for rtype, query in filters:
        type_filters.setdefault(rtype, []).append(query)
    patients: list[str] | None = None
    if patient_values:
        if level == "system":
            raise _bad("The 'patient' parameter applies to Patient- and Group-level exports only", "patient")
        patients = _patient_ids(patient_values)
    params = ExportParams(types=types, since_us=since, type_filters=type_filters, base=base, notes=notes)
    # The manifest's ``request``: the kick-off URL; a POST's parameters are not in it (export.html).
    url = base + request.path[len("/fhir") :]
    query = request.query_string.decode("latin-1")
    return KickOff(level, params, patients, f"{url}?{query}" if query else url)


def _types(
    level: str,
    who: Principal,
    asked: list[str] | None,
    filters: list[tuple[str, str]],
    lenient: bool,
    notes: list[str],
) -> list[str]:
    allowed = readable_types(who)
    if level == "system":
        # The shipped conformance artefacts are the server's, not data: only when named in _type.
        scope = supported_types() - SERVER_WRITTEN_TYPES - (READ_ONLY_TYPES if asked is None else set())
    else:  # export.html: Patient/Group level = the Patient compartment (compartmentdefinition-patient)
        scope = frozenset(t for t in supported_types() if not outside_compartments(t))
    named = list(dict.fromkeys(asked or []))
    for rtype in named:
        if rtype not in supported_types() or rtype in SERVER_WRITTEN_TYPES:
            raise _bad(f"_type names an unknown or unsupported resource type '{rtype}'", "_type")
    outside = [t for t in named if t not in scope]
    if outside:
        message = (
            f"_type {', '.join(outside)}: not in the Patient compartment, so not part of a "
            f"{level}-level export"
        )
        if not lenient:
            raise _bad(message, "_type")
        notes.append(message + "; ignored (Prefer: handling=lenient)")
        named = [t for t in named if t in scope]
        if not named:
            raise _bad("_type names no type this export can contain", "_type")
    for rtype, _query in filters:
        if asked is not None and rtype not in named:
            raise _bad(f"_typeFilter names {rtype}, which _type does not ask for", "_typeFilter")
        if rtype not in scope:
            raise _bad(
                f"_typeFilter names {rtype}, which a {level}-level export does not contain", "_typeFilter"
            )
    denied = [t for t in dict.fromkeys(named + [f[0] for f in filters]) if t not in allowed]
    if denied:
        raise FhirError(
            Category.FORBIDDEN,
            f"The access token's scopes do not allow reading {', '.join(denied)} (asked for in the export)",
        )
    if named:
        return named
    types = sorted(t for t in scope if t in allowed)
    if not types:
        raise FhirError(Category.FORBIDDEN, "The access token's scopes allow reading no resource type")
    return types
