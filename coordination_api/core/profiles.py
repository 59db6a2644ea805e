"""Profile and French-identifier validation of incoming resources (FR Core; R4 validation.html).

French identifier rules apply to every resource; a resource that claims a ``meta.profile`` we
ship is validated against it. Any error refuses the write with 422 and every finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coordination_api.errors import Category, FhirError, Issue
from fhir_profiles import french_identifiers
from fhir_profiles.conformance import Conformance, shipped
from fhir_profiles.issues import ValidationIssue
from fhir_profiles.validator import Validator


@dataclass
class ProfilePolicy:
    validator: Validator
    reject_unknown_profiles: bool = False

    def findings(
        self, resource: dict[str, Any], root: str, extra_profiles: list[str] | None = None
    ) -> list[ValidationIssue]:
        issues = list(french_identifiers.check_resource(resource, root))
        for index, contained in enumerate(resource.get("contained") or []):
            if isinstance(contained, dict):
                issues += french_identifiers.check_resource(contained, f"{root}.contained[{index}]")
        meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
        claimed = [p for p in (meta or {}).get("profile", []) if isinstance(p, str)]
        known = []
        for index, url in enumerate([*claimed, *(extra_profiles or [])]):
            if self.validator.profile(url) is not None:
                known.append(url)
            elif index >= len(claimed):
                # R4 resource-operation-validate: "if the profile is nominated and cannot be used, the
                # server SHALL return an error".
                message = f"Nominated profile {url} is not known to this server"
                issues.append(ValidationIssue("error", "not-supported", message, root))
            else:
                severity = "error" if self.reject_unknown_profiles else "warning"
                where = f"{root}.meta.profile[{index}]"
                issues.append(ValidationIssue(severity, "not-supported", f"Unknown profile {url}", where))
        issues += self.validator.validate(resource, known, root)
        return issues


_policy = ProfilePolicy(Validator(shipped()))


def configure(conformance: Conformance | None = None, *, reject_unknown_profiles: bool = False) -> None:
    """Set the per-process policy (called by create_app from the settings)."""
    global _policy  # one policy per process, fixed at start-up
    _policy = ProfilePolicy(Validator(conformance or shipped()), reject_unknown_profiles)


def policy() -> ProfilePolicy:
    return _policy


def to_issue(finding: ValidationIssue) -> Issue:
    return Issue(finding.severity, finding.code, finding.diagnostics, [finding.expression])


def enforce(resource: dict[str, Any], root: str) -> None:
    """Refuse (422, every finding) a resource with profile or identifier errors."""
    findings = _policy.findings(resource, root)
    if any(f.is_error for f in findings):
        issues = [to_issue(f) for f in sorted(findings, key=lambda f: not f.is_error)]
        first = next(i for i in issues if i.severity in {"error", "fatal"})
        raise FhirError(Category.UNPROCESSABLE, first.diagnostics, issues=issues)
