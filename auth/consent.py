"""What the consent page says about each scope, in plain French (SMART App Launch 2 scopes).

The page lists every requested scope: those granted with what they let the application do, the
others as « non accordé » with the reason (auth/scopes.py ``decide_user_launch``).
"""

from __future__ import annotations

from dataclasses import dataclass

from auth import scopes as smart

_VERBS = {"c": "créer", "r": "lire", "u": "modifier", "d": "supprimer", "s": "rechercher"}
# French names of the types a practice application usually asks for; others keep their FHIR name.
_TYPES = {
    "Patient": "les fiches d'identité",
    "Observation": "les observations (constantes, résultats)",
    "Condition": "les problèmes de santé",
    "MedicationRequest": "les prescriptions",
    "MedicationStatement": "les traitements",
    "AllergyIntolerance": "les allergies",
    "Encounter": "les venues et séjours",
    "Task": "les tâches de coordination",
    "CarePlan": "les plans de soins",
    "CareTeam": "les équipes de soins",
    "Communication": "les messages",
    "CommunicationRequest": "les demandes de communication",
    "DocumentReference": "les documents",
    "Consent": "les consentements",
    "AuditEvent": "le journal des accès",
    "Practitioner": "les fiches des professionnels",
    "PractitionerRole": "les rôles des professionnels",
    "Organization": "les structures",
}
_WHOSE = {
    "user": "des patients dont vous faites partie de l'équipe de soins",
    "patient": "du patient choisi, et de lui seul",
}
_OTHER = {
    "openid": "confirmer votre identité professionnelle (connexion OpenID Connect)",
    "fhirUser": "votre identité professionnelle : votre fiche de professionnel (Practitioner)",
    "profile": "votre nom, tel qu'il figure sur votre fiche de professionnel",
    "launch/patient": "l'application recevra le patient que vous choisissez ci-dessous",
    "launch": "recevoir le contexte de lancement transmis par votre logiciel",
}
_REASONS = {
    smart.UNKNOWN: "non accordé : accès inconnu de ce serveur",
    smart.NOT_REGISTERED: "non accordé : l'application n'est pas enregistrée pour cet accès",
    smart.NEEDS_PATIENT: "non accordé : il faut aussi demander un patient choisi (launch/patient)",
    smart.SYSTEM_ONLY: "non accordé : réservé aux services techniques, jamais au nom d'une personne",
}


@dataclass(frozen=True)
class Line:
    scope: str
    text: str


def _duration(seconds: int) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} jours"
    if seconds >= 2 * 3600:
        return f"{seconds // 3600} heures"
    return f"{max(1, seconds // 60)} minutes"


def explain(scope: str, offline_ttl: int, online_ttl: int) -> str:
    """One granted scope, in words the professional can judge."""
    if scope == "offline_access":
        return (
            "garder l'accès même lorsque vous n'utilisez pas l'application : jusqu'à "
            f"{_duration(offline_ttl)} après sa dernière utilisation"
        )
    if scope == "online_access":
        return f"prolonger l'accès pendant votre connexion, au plus {_duration(online_ttl)}"
    if scope in _OTHER:
        return _OTHER[scope]
    parsed = smart.parse_resource_scope(scope)
    if parsed is None:
        return scope
    verbs = [_VERBS[p] for p in "rscud" if p in parsed.permissions]
    said = verbs[0] if len(verbs) == 1 else ", ".join(verbs[:-1]) + " et " + verbs[-1]
    what = (
        "les données"
        if parsed.resource_type == "*"
        else _TYPES.get(parsed.resource_type, f"les ressources {parsed.resource_type}")
    )
    whose = _WHOSE.get(parsed.context, "")
    return f"{said} {what} {whose}".strip()


def lines(decision: smart.Decision, offline_ttl: int, online_ttl: int) -> tuple[list[Line], list[Line]]:
    """(granted, not granted) lines of the consent page."""
    granted = [Line(s, explain(s, offline_ttl, online_ttl)) for s in decision.granted]
    refused = [Line(s, _REASONS.get(why, "non accordé")) for s, why in decision.refused]
    return granted, refused
