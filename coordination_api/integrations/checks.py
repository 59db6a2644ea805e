"""``coordination connectors check``: one cheap real call to each configured connector, built as the
application builds it (docs/operations.md "Connectors"); a connector that is off is reported, not
called. The states themselves come from the settings alone (integrations/status.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from connectors.annuaire import AnnuaireSante
from connectors.eparcours import EparcoursPlatform
from connectors.errors import ConnectorError
from connectors.mhd import MhdRecipient
from connectors.mssante import SmtpSender
from connectors.psc import PscClient
from coordination_api.config import Settings
from coordination_api.integrations import annuaire_sync, dmp, eparcours
from coordination_api.integrations.mssante import mail_sender
from coordination_api.integrations.status import ConnectorState, describe
from coordination_api.security import psc_client


def _checker(name: str, settings: Settings) -> Callable[[], str]:
    """A cheap real call to the configured connector ``name`` (built as the app builds it)."""
    built: object
    if name == "dmp":
        built = dmp.build(settings.dmp)
    elif name == "eparcours":
        built = eparcours.build(settings.eparcours)
    elif name == "mssante":
        built = mail_sender(settings)[0]
    elif name == "annuaire":
        built = annuaire_sync.build(settings.annuaire)
    else:
        built = psc_client(settings.psc)
    if isinstance(built, MhdRecipient | EparcoursPlatform | SmtpSender | AnnuaireSante | PscClient):
        return built.check
    raise ValueError(f"{name} is not configured")


@dataclass(frozen=True)
class CheckResult:
    state: ConnectorState
    ok: bool | None  # None: not configured, not called
    detail: str

    def line(self) -> str:
        s = self.state
        if self.ok is None:
            return f"{s.name}: off ({s.main} is empty)" + (f"; {'; '.join(s.problems)}" if s.problems else "")
        verdict = "ok" if self.ok else "failed"
        extra = f" [misconfigured: {'; '.join(s.problems)}]" if s.problems else ""
        return f"{s.name}: {verdict} -> {s.target}: {self.detail}{extra}"

    @property
    def failed(self) -> bool:
        return self.ok is False or bool(self.state.problems)


def check(settings: Settings) -> list[CheckResult]:
    """Call every configured connector once; a connector off is reported, not called."""
    results = []
    for state in describe(settings):
        if not state.configured:
            results.append(CheckResult(state, None, ""))
            continue
        try:
            detail = _checker(state.name, settings)()
        except ConnectorError as exc:
            results.append(CheckResult(state, False, str(exc)))
        except (OSError, ValueError) as exc:  # e.g. a certificate file that cannot be loaded
            results.append(CheckResult(state, False, f"{type(exc).__name__}: {exc}"[:300]))
        else:
            results.append(CheckResult(state, True, detail))
    return results
