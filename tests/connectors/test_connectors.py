"""Connectors say what they are (issue 19): states from the settings, start-up lines, /readyz, and
``coordination connectors check`` against real local servers (the DMP recipient, the mutual-TLS
e-parcours platform, the MSSanté SMTP server, the ANS-like directory, the PSC-like OIDC provider)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from flask import Flask
from sqlalchemy import select

from coordination_api import jobs
from coordination_api.app import create_app
from coordination_api.cli import main
from coordination_api.config import (
    AnnuaireSettings,
    DmpSettings,
    EparcoursSettings,
    MssanteSettings,
    PscSettings,
    Settings,
)
from coordination_api.integrations.annuaire_sync import ENRICH
from coordination_api.integrations.checks import check
from coordination_api.integrations.status import ACTIVE, MISCONFIGURED, OFF, describe, log_states
from coordination_api.storage.schema import connector_job
from tests.conftest import _truncate, close_app
from tests.support.ans_server import API_KEY, DirectoryServer, cpts_dataset
from tests.support.connector_states import ALL_OFF
from tests.support.dmp import Recipient
from tests.support.dmp import recipient as recipient
from tests.support.eparcours import Platform
from tests.support.eparcours import platform as platform
from tests.support.mssante import SmtpServer
from tests.support.mssante import smtp as smtp
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, running_provider
from tests.support.pki import Pki, make_pki
from tests.support.served import database, serve

DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("connectors-pki"))


@pytest.fixture(scope="module")
def ans() -> Iterator[DirectoryServer]:
    server = DirectoryServer(cpts_dataset()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with running_provider() as running:
        yield running


def _configured(
    recipient: Recipient,
    platform: Platform,
    pki: Pki,
    smtp: SmtpServer,
    ans: DirectoryServer,
    provider: Provider,
) -> Settings:
    return Settings(
        dmp=DmpSettings(
            recipient_url=recipient.url, connect_timeout=1.0, read_timeout=2.0, source_oid="1.2.3.4"
        ),
        eparcours=EparcoursSettings(
            url=platform.url,
            client_cert=str(pki.client_cert),
            client_key=str(pki.client_key),
            ca_file=str(pki.ca),
            connect_timeout=1.0,
            read_timeout=2.0,
        ),
        mssante=MssanteSettings(
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            from_address="coordination@cpts-exemple.mssante.fr",
            client_cert=str(pki.client_cert),
            client_key=str(pki.client_key),
            ca_file=str(pki.ca),
            timeout=3.0,
        ),
        annuaire=AnnuaireSettings(
            base_url=ans.base_url, api_key=API_KEY, connect_timeout=1.0, read_timeout=2.0, retries=0
        ),
        psc=PscSettings(
            discovery_url=provider.discovery_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            connect_timeout=1.0,
            read_timeout=2.0,
        ),
    )


# -- states from the settings ---------------------------------------------------------------------


def test_nothing_configured_is_all_off() -> None:
    assert {c.name: c.state for c in describe(Settings())} == ALL_OFF
    lines = [c.line() for c in describe(Settings())]
    assert lines[0] == (
        "connector dmp (DMP (PDSm, IHE MHD ITI-65)): off "
        "(not configured: COORDINATION_DMP_RECIPIENT_URL is empty)"
    )


def test_active_connectors_name_their_host_never_credentials(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    settings = Settings(
        dmp=DmpSettings(
            recipient_url="https://user:s3cret@pdsm.example.org:8443/fhir", source_oid="1.2.250.1.42"
        ),
        eparcours=EparcoursSettings(
            url="https://ep.example.org/fhir/$process-message", client_cert=str(cert)
        ),
        mssante=MssanteSettings(
            smtp_host="smtp.mssante.example",
            from_address="cpts@x.mssante.fr",
            client_cert=str(cert),
            username="cpts",
            password="smtp-s3cret",
        ),
        annuaire=AnnuaireSettings(
            base_url="https://gateway.api.esante.gouv.fr/fhir/v2", api_key="key-s3cret"
        ),
        psc=PscSettings(
            discovery_url="https://auth.esw.esante.gouv.fr/x", client_id="c", client_secret="psc-s3cret"
        ),
    )
    states = {c.name: c for c in describe(settings)}
    assert {n: c.state for n, c in states.items()} == dict.fromkeys(ALL_OFF, ACTIVE)
    assert states["dmp"].target == "pdsm.example.org:8443"
    assert states["mssante"].target == "smtp.mssante.example:587"
    assert states["annuaire"].target == "gateway.api.esante.gouv.fr"
    text = "\n".join(c.line() for c in states.values())
    assert "s3cret" not in text and "user" not in text


@pytest.mark.parametrize(
    ("settings", "name", "expected"),
    [
        # a URL that is not https to a host that is not loopback
        (
            Settings(dmp=DmpSettings(recipient_url="http://pdsm.example.org/fhir", source_oid="1.2.3")),
            "dmp",
            "not https",
        ),
        # the placeholder OID on a real recipient
        (Settings(dmp=DmpSettings(recipient_url="https://pdsm.example.org/fhir")), "dmp", "placeholder"),
        # a certificate file that does not exist
        (
            Settings(
                dmp=DmpSettings(
                    recipient_url="https://p.example/fhir", client_cert="/nope/c.pem", source_oid="1.2.3"
                )
            ),
            "dmp",
            "COORDINATION_DMP_CLIENT_CERT /nope/c.pem does not exist",
        ),
        # a companion set while the connector is off: a forgotten setting
        (
            Settings(dmp=DmpSettings(client_cert="/etc/hostname")),
            "dmp",
            "COORDINATION_DMP_RECIPIENT_URL is empty",
        ),
        # mutual TLS without a client certificate
        (
            Settings(eparcours=EparcoursSettings(url="https://ep.example.org/m")),
            "eparcours",
            "EPARCOURS_CLIENT_CERT is required",
        ),
        (
            Settings(eparcours=EparcoursSettings(url="ftp://ep.example.org/m")),
            "eparcours",
            "not an http(s) URL",
        ),
        (Settings(mssante=MssanteSettings(smtp_host="127.0.0.1")), "mssante", "MSSANTE_FROM is required"),
        (
            Settings(mssante=MssanteSettings(smtp_host="127.0.0.1", from_address="a@b.fr", username="u")),
            "mssante",
            "SMTP_USERNAME without COORDINATION_MSSANTE_SMTP_PASSWORD",
        ),
        (Settings(mssante=MssanteSettings(from_address="a@b.mssante.fr")), "mssante", "SMTP_HOST is empty"),
        (
            Settings(annuaire=AnnuaireSettings(base_url="https://gw.example/fhir/v2")),
            "annuaire",
            "API_KEY is required",
        ),
        (Settings(annuaire=AnnuaireSettings(api_key="k")), "annuaire", "BASE_URL is empty"),
        (
            Settings(psc=PscSettings(discovery_url="https://psc.example/.well-known/x", client_id="c")),
            "psc",
            "CLIENT_SECRET is required",
        ),
    ],
)
def test_misconfigured_connectors_say_why(settings: Settings, name: str, expected: str) -> None:
    state = next(c for c in describe(settings) if c.name == name)
    assert state.state == MISCONFIGURED
    assert expected in state.line()
    assert all(c.state == OFF for c in describe(settings) if c.name != name)


def test_one_start_up_line_per_connector(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(
        dmp=DmpSettings(recipient_url="http://pdsm.example.org/fhir", source_oid="1.2.3"),
        annuaire=AnnuaireSettings(base_url="https://gw.example/fhir/v2", api_key="very-secret-key"),
    )
    with caplog.at_level(logging.INFO, logger="coordination_api.connectors"):
        log_states(settings)
    records = [r for r in caplog.records if r.name == "coordination_api.connectors"]
    assert len(records) == 5
    by_name = {r.getMessage().split()[1]: r for r in records}
    assert by_name["dmp"].levelno == logging.WARNING and "misconfigured" in by_name["dmp"].getMessage()
    assert by_name["annuaire"].getMessage().endswith("active -> gw.example")
    assert "off" in by_name["psc"].getMessage()
    assert "very-secret-key" not in caplog.text


# -- /readyz ---------------------------------------------------------------------------------------


def test_readyz_details_connectors_and_a_misconfigured_one_degrades(app: Flask, database_url: str) -> None:
    app.test_client()  # the session database, migrated
    made = create_app(
        Settings(
            database_url=database_url,
            dmp=DmpSettings(recipient_url="http://pdsm.example.org/fhir", source_oid="1.2.3"),
            annuaire=AnnuaireSettings(base_url="https://gw.example/fhir/v2", api_key="k"),
        )
    )
    try:
        answer = made.test_client().get("/readyz")
        assert answer.status_code == 200
        body = answer.get_json()
        assert body == {
            "status": "degraded",
            "degraded": ["connector:dmp"],
            "connectors": {**ALL_OFF, "dmp": MISCONFIGURED, "annuaire": ACTIVE},
        }
        assert "example" not in answer.get_data(as_text=True)  # states only: no hosts on a public probe
    finally:
        close_app(made)


# -- `coordination connectors check` ----------------------------------------------------------------


def test_check_calls_every_configured_connector_for_real(
    recipient: Recipient,
    platform: Platform,
    pki: Pki,
    smtp: SmtpServer,
    ans: DirectoryServer,
    provider: Provider,
) -> None:
    settings = _configured(recipient, platform, pki, smtp, ans, provider)
    assert {c.name: c.state for c in describe(settings)} == dict.fromkeys(ALL_OFF, ACTIVE)
    results = {r.state.name: r for r in check(settings)}
    assert {n: r.ok for n, r in results.items()} == dict.fromkeys(ALL_OFF, True), [
        r.line() for r in results.values()
    ]
    assert "HEAD answered" in results["dmp"].detail and results["eparcours"].detail.startswith("TLS")
    assert "STARTTLS" in results["mssante"].detail
    assert "JWKS" in results["psc"].detail
    assert API_KEY in ans.keys_seen


def test_check_reports_each_failure_with_its_reason(
    recipient: Recipient,
    platform: Platform,
    pki: Pki,
    smtp: SmtpServer,
    ans: DirectoryServer,
    provider: Provider,
) -> None:
    good = _configured(recipient, platform, pki, smtp, ans, provider)
    stranger = {"client_cert": str(pki.stranger_cert), "client_key": str(pki.stranger_key)}
    bad = good.model_copy(
        update={
            "dmp": replace(good.dmp, recipient_url=f"{DEAD}/fhir"),
            "eparcours": replace(good.eparcours, **stranger),  # a certificate the platform does not know
            "mssante": replace(good.mssante, **stranger),
            "annuaire": replace(good.annuaire, api_key="wrong-key"),
            "psc": replace(good.psc, discovery_url=f"{DEAD}/.well-known/openid-configuration"),
        }
    )
    results = {r.state.name: r for r in check(bad)}
    assert {n: r.ok for n, r in results.items()} == dict.fromkeys(ALL_OFF, False), [
        r.line() for r in results.values()
    ]
    assert "cannot connect" in results["dmp"].detail
    assert "API key was refused" in results["annuaire"].detail
    assert "wrong-key" not in "".join(r.line() for r in results.values())
    for name in ("eparcours", "mssante"):
        assert results[name].detail, name


def test_check_command_exit_status(
    app: Flask,
    database_url: str,
    recipient: Recipient,
    platform: Platform,
    pki: Pki,
    smtp: SmtpServer,
    ans: DirectoryServer,
    provider: Provider,
) -> None:
    app.test_client()
    runner = app.test_cli_runner()
    off = runner.invoke(main, args=["connectors", "check"])
    assert off.exit_code == 0, off.output
    assert "dmp: off (COORDINATION_DMP_RECIPIENT_URL is empty)" in off.output

    good = _configured(recipient, platform, pki, smtp, ans, provider).model_copy(
        update={"database_url": database_url}
    )
    for settings, code in (
        (good, 0),
        (good.model_copy(update={"dmp": replace(good.dmp, recipient_url=f"{DEAD}/fhir")}), 1),
    ):
        made = create_app(settings)
        try:
            result = made.test_cli_runner().invoke(main, args=["connectors", "check", "--json"])
            assert result.exit_code == code, result.output
            out = orjson.loads(result.stdout)
            assert out["dmp"]["ok"] is (code == 0) and out["eparcours"]["ok"] is True
            assert out["psc"]["target"] == f"127.0.0.1:{provider.port}"
        finally:
            close_app(made)


# -- not configured: refused, never a success --------------------------------------------------------


def _dead_jobs(app: Flask, kind: str) -> list[Any]:
    with app.extensions["coordination"].repo.engine.connect() as conn:
        j = connector_job
        return list(conn.execute(select(j.c.status, j.c.last_error).where(j.c.kind == kind)).all())


def test_a_directory_job_left_when_the_directory_is_unconfigured_dies_saying_so(app: Flask) -> None:
    """The Null directory refuses (NOT_CONFIGURED): the enrichment job ends dead with that reason,
    not ``done`` as if the directory had found nobody."""

    _truncate(app)
    with app.extensions["coordination"].repo.writing() as conn:
        jobs.enqueue(conn, ENRICH, {"type": "Practitioner", "rpps": "10101010101"})
    jobs.run_due(app)
    ((status, error),) = _dead_jobs(app, ENRICH)
    assert status == "dead" and "directory connector not configured" in error


def test_pro_sante_connect_off_has_no_routes(app: Flask) -> None:
    browser = app.test_client()
    assert browser.get("/auth/psc/login").status_code == 404
    assert "Pro Santé Connect" not in browser.get("/auth/login").get_data(as_text=True)


def test_serve_logs_one_line_per_connector_once(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``coordination serve`` (a real process tree) says at start what each connector is; its worker
    child does not say it again; /readyz of the running service names the misconfigured one."""

    monkeypatch.setenv("COORDINATION_DMP_RECIPIENT_URL", "http://pdsm.example.org/fhir")
    monkeypatch.setenv("COORDINATION_DMP_SOURCE_OID", "1.2.3")
    monkeypatch.setenv("COORDINATION_ANNUAIRE_BASE_URL", "https://gw.example/fhir/v2")
    monkeypatch.setenv("COORDINATION_ANNUAIRE_API_KEY", "very-secret-key")
    with database(backend, tmp_path) as url, serve(url, tmp_path, "--no-mllp") as served:
        body = requests.get(f"{served.root}/readyz", timeout=10).json()
        assert body["status"] == "degraded" and "connector:dmp" in body["degraded"]
        lines = [r for r in served.log_lines() if r.get("logger") == "coordination_api.connectors"]
    assert len(lines) == 5, lines
    text = {str(r["msg"]).split()[1]: r for r in lines}
    assert text["dmp"]["level"] == "WARNING" and "misconfigured" in text["dmp"]["msg"]
    assert "not https" in text["dmp"]["msg"]
    assert text["annuaire"]["msg"].endswith("active -> gw.example")
    assert all("off" in text[n]["msg"] for n in ("eparcours", "mssante", "psc"))
    assert "very-secret-key" not in served.log_path.read_text()
