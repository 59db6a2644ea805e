"""HL7 v2.5 ADT (chapter 3, IHE PAM France) → :class:`EncounterEvent`.

Segments used: MSH (2.15.9), EVN (3.4.1), PID (3.4.2, PAM FR "Segment PID": INS in PID-3, identity
reliability in PID-32), PV1 (3.4.3, PAM FR "Segment PV1": NDA in PV1-19). Errors carry HL7 table 0357 codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from connectors.events import EncounterEvent, EventError, foreign_namespace, scoped_system
from connectors.hl7v2.parse import Components, Segment, segment, value
from fhir_profiles.french_identifiers import (
    FINESS,
    FR_V2_0203,
    INS_NIA,
    INS_NIA_TEST,
    INS_NIR,
    INS_NIR_TEST,
    RELIABILITY_SYSTEM,
    RELIABILITY_URL,
    RPPS,
    TRUSTED_STATUSES,
    V2_0203,
    check_finess,
    check_nir,
)

# HL7 v2.5 table 0003 trigger → event kind (IHE PAM FR 2.x: A01 admission, A02 mutation, A03 sortie,
# A04 inscription, A08 mise à jour, A11 annulation d'admission, A13 annulation de sortie).
TRIGGERS = {
    "A01": "admit",
    "A02": "transfer",
    "A03": "discharge",
    "A04": "register",
    "A08": "update",
    "A11": "cancel-admit",
    "A13": "cancel-discharge",
}
STATUS = {
    "admit": "in-progress",
    "transfer": "in-progress",
    "register": "in-progress",
    "update": "in-progress",
    "discharge": "finished",
    "cancel-admit": "entered-in-error",
    "cancel-discharge": "in-progress",
}
# INS assigning-authority OIDs (PAM FR: ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO) → system, FR Core type.
INS_OIDS = {
    "1.2.250.1.213.1.4.8": (INS_NIR, "INS-NIR", "official"),
    "1.2.250.1.213.1.4.9": (INS_NIA, "INS-NIA", "temp"),
    "1.2.250.1.213.1.4.10": (INS_NIR_TEST, "INS-NIR-TEST", "official"),
    "1.2.250.1.213.1.4.11": (INS_NIA_TEST, "INS-NIR-DEMO", "official"),
}
INS_NAMESPACES = {
    "ASIP-SANTE-INS-NIR": "1.2.250.1.213.1.4.8",
    "ASIP-SANTE-INS-NIA": "1.2.250.1.213.1.4.9",
    "ASIP-SANTE-INS-NIR-TEST": "1.2.250.1.213.1.4.10",
    "ASIP-SANTE-INS-NIR-DEMO": "1.2.250.1.213.1.4.11",
}
# FR Core fr-core-cs-v2-0445 (HL7 table 0445 as extended by PAM FR).
RELIABILITY_CODES = frozenset(
    {
        *("VIDE", "PROV", "VALI", "DOUB", "DESA", "DPOT", "DOUA", "COLP", "COLV", "FILI", "CACH", "ANOM"),
        *("IDVER", "RECD", "IDRA", "USUR", "HOMD", "HOMA", "INVA", "FICT", "DOUT", "RECUP", "QUAL"),
    }
)
GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}
# HL7 table 0200 → FHIR name-use (PAM FR: L nom de naissance, D nom utilisé).
NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "S": "anonymous", "B": "official"}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# HL7 table 0004 patient class (PAM FR adds R recurring) → v3 ActCode.
PATIENT_CLASS = {
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "R": ("AMB", "ambulatory"),
    "E": ("EMER", "emergency"),
    "P": ("PRENC", "pre-admission"),
}
# PV1-36 is the user-defined HL7 table 0112; PAM FR senders put the PMSI "mode de sortie" there. We could
# not confirm a published NOS terminology URL for it, so the code is kept as sent under the v2 table 0112
# code system (documented choice).
DISCHARGE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0112"
PARIS = ZoneInfo("Europe/Paris")
BIRTH_LIST_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name"
_TS = re.compile(
    r"(?P<y>\d{4})(?:(?P<mo>\d{2})(?:(?P<d>\d{2})(?:(?P<h>\d{2})(?:(?P<mi>\d{2})"
    r"(?:(?P<s>\d{2})(?:\.(?P<f>\d{1,4}))?)?)?)?)?)?(?P<tz>[+-]\d{4})?"
)
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+")
# HL7 table 0203 identifier types accepted in PID-3 as the sender's local patient identifier (IPP):
# PI patient internal identifier, MR medical record number, PN person number, AN account number.
LOCAL_ID_TYPES = ("PI", "MR", "PN", "AN")
INS_TYPES = frozenset({"INS", "INS-NIR", "INS-NIA"})


@dataclass(frozen=True)
class Options:
    """Mapping settings (COORDINATION_HL7V2_LOCAL_ID_TYPES, COORDINATION_HL7V2_AUTHORITIES)."""

    local_id_types: tuple[str, ...] = LOCAL_ID_TYPES
    # Assigning-authority namespace id (HD-1) → identifier system URI.
    authorities: tuple[tuple[str, str], ...] = ()


def to_event(msg: Any, options: Options | None = None) -> EncounterEvent:
    """One parsed ADT message → EncounterEvent (EventError with an HL7 0357 code otherwise)."""
    options = options or Options()
    msh = segment(msg, "MSH")
    if msh is None:
        raise EventError("No MSH segment", code="100", location="MSH", rejected=True)
    message_type, trigger = msh.get(9), msh.get(9, 2)
    if message_type != "ADT":
        raise EventError(
            f"Unsupported message type {message_type[:10]!r}", code="200", location="MSH-9", rejected=True
        )
    kind = TRIGGERS.get(trigger)
    if kind is None:
        raise EventError(f"Unsupported event {trigger[:10]!r}", code="201", location="MSH-9", rejected=True)
    message_id = msh.get(10)
    if not message_id:
        raise EventError("MSH-10 (message control id) is required", code="101", location="MSH-10")
    if len(message_id) > 199:  # ST 199 (HL7 v2.7 2.14.9.10); it is part of the de-duplication key
        raise EventError(
            "MSH-10 (message control id) is longer than 199 characters", code="102", location="MSH-10"
        )
    application, facility = msh.get(3), msh.get(4)
    if not application and not facility:
        raise EventError("MSH-3/MSH-4 (sending application/facility) required", code="101", location="MSH-3")
    pid = segment(msg, "PID")
    if pid is None:
        raise EventError("The PID segment is required", code="100", location="PID")
    pv1 = segment(msg, "PV1")
    if pv1 is None:
        raise EventError("The PV1 segment is required", code="100", location="PV1")
    evn = segment(msg, "EVN")
    occurred = None
    if evn is not None:
        occurred = _ts(evn, 2) or _ts(evn, 6)
    sender = f"{application}^{facility}"
    authorities = Authorities(sender, options)
    warnings: list[EventError] = []
    return EncounterEvent(
        kind=kind,
        sender=sender,
        message_id=message_id,
        patient=patient(pid, authorities, warnings),
        encounter=encounter(pv1, pid, kind, authorities),
        service_provider=_organization(pv1, msh),
        practitioners=[p for p in (_practitioner(pv1, 7), _practitioner(pv1, 8)) if p is not None],
        occurred=occurred or _ts(msh, 7),
        warnings=warnings,
    )


# -- Time (HL7 v2.5 2.A.74 DTM / 2.A.75 TS) ---------------------------------------------------------------


def ts_to_fhir(text: str, location: str = "TS") -> str | None:
    """HL7 TS ``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]`` → FHIR dateTime.

    FHIR needs seconds and a zone once there is a time: missing minutes/seconds read as 00, and a time
    without an offset is read as French legal time (Europe/Paris), as PAM FR senders emit local time.
    """
    text = text.strip()
    if not text:
        return None
    match = _TS.fullmatch(text)
    if match is None:
        raise EventError(f"{location}: not an HL7 date/time", code="102", location=location)
    g = match.groupdict()
    if g["tz"] and (int(g["tz"][1:3]) > 14 or int(g["tz"][3:5]) > 59):
        raise EventError(f"{location}: invalid time zone offset", code="102", location=location)
    try:
        if g["h"] is None:
            day = datetime(int(g["y"]), int(g["mo"] or 1), int(g["d"] or 1))
            if g["d"]:
                return day.strftime("%Y-%m-%d")
            return f"{g['y']}-{g['mo']}" if g["mo"] else g["y"]
        moment = datetime(
            int(g["y"]), int(g["mo"]), int(g["d"]), int(g["h"]), int(g["mi"] or 0), int(g["s"] or 0)
        )
        if g["tz"]:
            sign = 1 if g["tz"][0] == "+" else -1
            hours, minutes = int(g["tz"][1:3]), int(g["tz"][3:5])
            moment = moment.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
        else:
            moment = moment.replace(tzinfo=PARIS)
    except (ValueError, TypeError):
        raise EventError(f"{location}: invalid date/time", code="102", location=location) from None
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if g["f"]:
        stamp += "." + g["f"]
    offset = moment.strftime("%z")
    return f"{stamp}{offset[:3]}:{offset[3:]}"


def _ts(seg: Segment, n: int) -> str | None:
    return ts_to_fhir(seg.get(n), f"{seg.id}-{n}")


# -- Patient (PID) -------------------------------------------------------------------------------------------


class Authorities:
    """Assigning authority (HD, HL7 v2.5 2.A.33) → ``Identifier.system``, always a URI.

    A universal id (HD-2) of type ISO (HD-3, an OID) → ``urn:oid:``, UUID → ``urn:uuid:``, URI → itself;
    else the namespace id (HD-1) through COORDINATION_HL7V2_AUTHORITIES, an OID namespace → ``urn:oid:``,
    else ``urn:coordination:hl7v2:<sender>:<namespace>``: a bare namespace is unique within its sender
    only (``MSH-3^MSH-4``, the sender ``discharge.check_sender`` binds to the client's credentials).
    A URI in the server's reserved ``urn:coordination:`` space other than the sender's own: AE 103.
    """

    def __init__(self, sender: str, options: Options) -> None:
        self.sender = sender
        self.map = dict(options.authorities)
        self.local_types = frozenset(t.strip().upper() for t in options.local_id_types if t.strip())

    def system(self, components: Components, component: int, location: str) -> str | None:
        namespace = value(components, component, 1)
        universal = value(components, component, 2)
        kind = value(components, component, 3).upper()
        if universal:
            if kind in {"ISO", ""} and _OID.fullmatch(universal):
                return f"urn:oid:{universal}"
            if kind in {"UUID", ""} and _UUID.fullmatch(universal):
                return f"urn:uuid:{universal.lower()}"
            if kind in {"URI", "URL"} and _URI.fullmatch(universal):
                if foreign_namespace(universal, self.sender):
                    raise EventError(
                        f"{location}: the assigning authority {universal[:120]!r} is a namespace of this "
                        "server that belongs to another sender",
                        code="103",
                        location=location,
                    )
                return universal
        for key in (namespace, universal):
            if key and key in self.map:
                return self.map[key]
        if namespace and _OID.fullmatch(namespace):
            return f"urn:oid:{namespace}"
        key = namespace or universal
        if not key:
            return None
        return scoped_system(self.sender, key)


def patient(pid: Segment, authorities: Authorities, warnings: list[EventError]) -> dict[str, Any]:
    """PID → FHIR Patient JSON (no id). An INS is kept only with a VALI/QUAL identity (CONTRACT).

    PID-32 is HL7 user table 0445 (PAM FR values, fr-core-cs-v2-0445): a code outside it is not an
    error but an identity that is not validated (the INS is not kept, no status is recorded), reported
    as a warning (ERR severity W, code 103) in the AA.
    """
    options_types = authorities.local_types
    statuses = [value(rep) for rep in pid.repetitions(32) if value(rep)]
    unknown = [code for code in statuses if code not in RELIABILITY_CODES]
    if unknown:
        warnings.append(
            EventError(
                f"PID-32: identity reliability code {unknown[0][:20]!r} unknown; "
                "the identity is treated as not validated",
                code="103",
                location="PID-32",
            )
        )
        statuses = [code for code in statuses if code in RELIABILITY_CODES and code not in TRUSTED_STATUSES]
    status = statuses[0] if statuses else None
    trusted = status in TRUSTED_STATUSES
    identifiers: list[dict[str, Any]] = []
    reps = [rep for rep in pid.repetitions(3) if any(value(rep, i) for i in range(1, 6))]
    refused: list[str] = []  # why an identifier was not usable (PID-3 has nothing usable: the reason)
    for rep in reps:
        number, type_code = value(rep), value(rep, 5).upper()
        oid = value(rep, 4, 2)
        if oid not in INS_OIDS:
            oid = INS_NAMESPACES.get(value(rep, 4), oid)
        if oid in INS_OIDS or type_code in INS_TYPES:
            if oid not in INS_OIDS:
                raise EventError(
                    "PID-3: INS without a known INS assigning authority (PID-3.4)",
                    code="103",
                    location="PID-3",
                )
            reason = check_nir(number)
            if reason:
                raise EventError(f"PID-3: invalid INS ({reason})", code="102", location="PID-3")
            if trusted:
                system, fr_type, use = INS_OIDS[oid]
                identifiers.append(
                    {
                        "use": use,
                        "type": {"coding": [{"system": FR_V2_0203, "code": fr_type}]},
                        "system": system,
                        "value": number,
                    }
                )
            else:
                refused.append("ins")
            continue
        if not number:
            refused.append("value")
        elif not type_code:
            refused.append("no-type")
        elif type_code not in options_types:
            refused.append("type")
        else:
            authority = authorities.system(rep, 4, "PID-3")
            if authority is None:
                refused.append("authority")  # an unscoped IPP cannot be matched safely
                continue
            identifiers.append(
                {
                    "use": "usual",
                    "type": {"coding": [{"system": V2_0203, "code": type_code}]},
                    "system": authority,
                    "value": number,
                }
            )
    if not identifiers:
        raise _no_identifier(refused, options_types)
    resource: dict[str, Any] = {"resourceType": "Patient"}
    if status:
        resource["extension"] = [
            {
                "url": RELIABILITY_URL,
                "extension": [
                    {"url": "identityStatus", "valueCoding": {"system": RELIABILITY_SYSTEM, "code": status}}
                ],
            }
        ]
    resource["identifier"] = identifiers
    names = [n for n in (_name(rep) for rep in pid.repetitions(5)) if n]
    if names:
        resource["name"] = names
    telecom = [t for t in (_telecom(rep, "home") for rep in pid.repetitions(13)) if t]
    telecom += [t for t in (_telecom(rep, "work") for rep in pid.repetitions(14)) if t]
    if telecom:
        resource["telecom"] = telecom
    sex = pid.get(8)
    if sex:
        if sex not in GENDER:
            raise EventError("PID-8: unknown administrative sex", code="103", location="PID-8")
        resource["gender"] = GENDER[sex]
    birth = _ts(pid, 7)
    if birth:
        resource["birthDate"] = birth[:10]
    death = _ts(pid, 29)
    if death:
        resource["deceasedDateTime"] = death
    elif pid.get(30) == "Y":
        resource["deceasedBoolean"] = True
    addresses = [a for a in (_address(rep) for rep in pid.repetitions(11)) if a]
    if addresses:
        resource["address"] = addresses
    return resource


def _no_identifier(refused: list[str], types: frozenset[str]) -> EventError:
    """The table 0357 code of a PID-3 without a usable identifier: 101 only when something is missing."""
    accepted = ", ".join(sorted(types))
    if not refused:
        return EventError("PID-3: no patient identifier", code="101", location="PID-3")
    if "type" in refused:
        return EventError(
            f"PID-3: no identifier of an accepted type (PID-3.5 in {accepted}, or an INS); "
            "COORDINATION_HL7V2_LOCAL_ID_TYPES",
            code="103",
            location="PID-3",
        )
    if "no-type" in refused:
        return EventError("PID-3: an identifier without its type (PID-3.5)", code="101", location="PID-3")
    if "authority" in refused:
        return EventError(
            "PID-3: the local identifier has no assigning authority (PID-3.4)", code="101", location="PID-3"
        )
    if "value" in refused:
        return EventError("PID-3: an identifier without its value (PID-3.1)", code="101", location="PID-3")
    return EventError(
        "PID-3: no local identifier (IPP), and the INS is used only with a validated identity (PID-32)",
        code="101",
        location="PID-3",
    )


def _name(rep: Components) -> dict[str, Any] | None:
    """XPN (2.A.88): family^given^further given names^suffix^prefix^degree^type."""
    name: dict[str, Any] = {}
    use = NAME_USE.get(value(rep, 7))
    if use:
        name["use"] = use
    if value(rep):
        name["family"] = value(rep)
    first, further = value(rep, 2), value(rep, 3)
    given = [g for g in (first, further) if g]
    if further and value(rep, 7) == "L" and (further + " ").startswith(first + " "):
        # PAM FR / INS: on the birth name, XPN-3 is the list of birth given names (first one included):
        # FR Core keeps it in the birth-list-given-name extension, given is the first given name.
        name["extension"] = [{"url": BIRTH_LIST_URL, "valueString": further}]
        given = [first]
    if given:
        name["given"] = given
    if value(rep, 5):
        name["prefix"] = [value(rep, 5)]
    if value(rep, 4):
        name["suffix"] = [value(rep, 4)]
    return name if set(name) - {"use", "extension"} else None


def _telecom(rep: Components, default_use: str) -> dict[str, Any] | None:
    """XTN (2.A.89): use code (PRN/WPN/ORN/NET), equipment (PH/CP/FX/Internet), email, number (XTN-12)."""
    use_code, equipment = value(rep, 2), value(rep, 3)
    if use_code == "NET" or equipment in {"Internet", "X.400"}:
        address = value(rep, 4) or value(rep)
        return {"system": "email", "value": address} if address else None
    number = value(rep, 12) or value(rep) or "".join(value(rep, i) for i in (5, 6, 7))
    if not number:
        return None
    point: dict[str, Any] = {"system": "fax" if equipment == "FX" else "phone", "value": number}
    if equipment == "CP":
        point["use"] = "mobile"
    else:
        point["use"] = {"PRN": "home", "WPN": "work", "ORN": "home"}.get(use_code, default_use)
    return point


def _address(rep: Components) -> dict[str, Any] | None:
    """XAD (2.A.85): street^other^city^state^zip^country^type; PAM FR type BDL (birth place) is skipped."""
    kind = value(rep, 7)
    if kind in {"BDL", "BR"}:
        return None
    address: dict[str, Any] = {}
    lines = [line for line in (value(rep), value(rep, 2)) if line]
    if lines:
        address["line"] = lines
    for key, component in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6)):
        if value(rep, component):
            address[key] = value(rep, component)
    if not address:
        return None
    use = {"H": "home", "B": "work", "O": "work", "C": "temp"}.get(kind)
    if use:
        address["use"] = use
    if kind == "M":
        address["type"] = "postal"
    return address


# -- Encounter (PV1) --------------------------------------------------------------------------------


def encounter(pv1: Segment, pid: Segment, kind: str, authorities: Authorities) -> dict[str, Any]:
    """PV1 → FHIR Encounter JSON without id and subject; identifier[0] is the visit number (NDA)."""
    visit = pv1.repetitions(19)[:1] or pid.repetitions(18)[:1]  # PAM FR: PV1-19, else PID-18
    if not visit or not value(visit[0]):
        raise EventError("PV1-19: the visit number is required", code="101", location="PV1-19")
    identifier: dict[str, Any] = {"value": value(visit[0])}
    system = authorities.system(visit[0], 4, "PV1-19")
    if system:
        identifier = {"system": system, **identifier}
    end = _ts(pv1, 45)
    status = STATUS[kind]
    if kind == "update" and end:
        status = "finished"  # A08 on a stay that already has a discharge date
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "identifier": [identifier],
        "status": status,
    }
    patient_class = pv1.get(2)
    code, display = PATIENT_CLASS.get(patient_class, ("", ""))
    if code:
        resource["class"] = {"system": ACT_CODE, "code": code, "display": display}
    else:  # R4 Encounter.class is 1..1; the binding is extensible
        resource["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"}
    period = {k: v for k, v in (("start", _ts(pv1, 44)), ("end", end)) if v}
    if period and kind != "cancel-discharge":
        resource["period"] = period
    elif period.get("start"):
        resource["period"] = {"start": period["start"]}
    disposition = pv1.repetitions(36)[:1]
    if disposition and value(disposition[0]) and kind != "cancel-discharge":
        coding = {"system": DISCHARGE_SYSTEM, "code": value(disposition[0])}
        if value(disposition[0], 2):
            coding["display"] = value(disposition[0], 2)
        resource["hospitalization"] = {"dischargeDisposition": {"coding": [coding]}}
    location = pv1.repetitions(3)[:1]
    if location:
        parts = [value(location[0], i) for i in (1, 2, 3)]
        display = " / ".join(p for p in parts if p)
        if display:
            resource["location"] = [
                {"location": {"display": display}, "status": "completed" if end else "active"}
            ]
    return resource


def _organization(pv1: Segment, msh: Segment) -> dict[str, Any] | None:
    """FINESS from PV1-3.4 (facility HD of the assigned location), else MSH-4 (sending facility HD)."""
    candidates: list[tuple[str, str]] = []  # (namespace id, universal id)
    location = pv1.repetitions(3)[:1]
    if location:
        candidates.append((value(location[0], 4, 1), value(location[0], 4, 2)))
    candidates.append((msh.get(4), msh.get(4, 2)))
    for namespace, universal in candidates:
        for candidate in (universal, namespace):
            if candidate and check_finess(candidate) is None:
                organization: dict[str, Any] = {
                    "resourceType": "Organization",
                    "identifier": [{"system": FINESS, "value": candidate}],
                }
                if namespace and namespace != candidate:
                    organization["name"] = namespace
                return organization
    return None


def _practitioner(pv1: Segment, n: int) -> dict[str, Any] | None:
    """XCN (2.A.90) id^family^given^second^suffix^prefix: Practitioner with an RPPS (11 digits;
    a 12-character idNatPs "8"+RPPS is read as its RPPS)."""
    reps = pv1.repetitions(n)
    for rep in reps:
        number = value(rep)
        if re.fullmatch(r"8[0-9]{11}", number):
            number = number[1:]
        if not re.fullmatch(r"[0-9]{11}", number):
            continue
        practitioner: dict[str, Any] = {
            "resourceType": "Practitioner",
            "identifier": [{"system": RPPS, "value": number}],
        }
        name: dict[str, Any] = {}
        if value(rep, 2):
            name["family"] = value(rep, 2)
        if value(rep, 3):
            name["given"] = [value(rep, 3)]
        if value(rep, 6):
            name["prefix"] = [value(rep, 6)]
        if name:
            practitioner["name"] = [name]
        return practitioner
    return None
