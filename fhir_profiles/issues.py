"""Validation findings, independent of the web layer (this package imports nothing of ours)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ValidationIssue:
    """One finding: OperationOutcome.issue severity/code, a diagnostic in English, the FHIRPath."""

    severity: str  # fatal | error | warning | information
    code: str  # OperationOutcome issue type: invalid, structure, required, value, invariant, code-invalid…
    diagnostics: str
    expression: str

    @property
    def is_error(self) -> bool:
        return self.severity in {"fatal", "error"}
