"""The Annuaire Santé client against a real local directory server: look-ups, paging, cache, and
every way the directory can fail (key refused, 5xx, timeouts, malformed answers, looping links)."""

from __future__ import annotations

import logging

import pytest

from connectors.annuaire import AnnuaireSante, NullDirectory, TTLCache
from connectors.errors import ConnectorError, Failure
from coordination_api.config import Settings
from coordination_api.errors import from_connector_error
from tests.integrations.annuaire_sync.conftest import FAST
from tests.support.ans_server import API_KEY, DirectoryServer


def test_practitioner_by_rpps_with_its_qualifications(directory: AnnuaireSante, ans: DirectoryServer) -> None:
    found = directory.practitioner("10000000001")
    assert found is not None and found["id"] == "003-000001"
    assert {q["code"]["coding"][0]["code"] for q in found["qualification"]} == {"DE05", "10"}
    assert ans.keys_seen == {API_KEY}
    # Searched by RPPS or idNatPs ("8" + RPPS), which v1 and v2 of the API both know.
    assert (
        "identifier=https://rpps.esante.gouv.fr|10000000001,urn:oid:1.2.250.1.71.4.2.1|810000000001"
        in (ans.requests[0][1])
    )


def test_unknown_practitioner_and_organization_are_none(directory: AnnuaireSante) -> None:
    assert directory.practitioner("19999999999") is None
    assert directory.organization("990000001") is None


def test_organization_by_finess_or_directory_id(directory: AnnuaireSante) -> None:
    by_finess = directory.organization("330000001")
    by_id = directory.organization("001-01-1001")
    assert by_finess is not None and by_id is not None
    assert by_finess["id"] == by_id["id"] == "001-01-1001"
    with pytest.raises(ValueError, match="FINESS"):
        directory.organization("not an id!")


def test_members_are_read_over_all_pages_with_their_practitioners(
    directory: AnnuaireSante, ans: DirectoryServer
) -> None:
    members = list(directory.organization_members("001-01-1001"))
    assert [m.role["id"] for m in members] == ["pr-0", "pr-1", "pr-2", "pr-3", "pr-4", "pr-second"]
    assert all(m.practitioner is not None for m in members)
    assert members[-1].practitioner is not None and members[-1].practitioner["id"] == "003-000000"
    assert members[0].total == 6
    pages = [q for _path, q in ans.requests if "_getpages=" in q]
    assert len(pages) == 2  # page size 2: first page, then two next links


def test_a_server_that_ignores_include_is_asked_for_the_practitioners(
    directory: AnnuaireSante, ans: DirectoryServer
) -> None:
    ans.fail("no-include")
    members = list(directory.organization_members("001-01-1001"))
    assert all(m.practitioner is not None for m in members)
    assert any("_id=" in q for _path, q in ans.requests)


def test_roles_and_services_of_an_organization(directory: AnnuaireSante) -> None:
    assert len(list(directory.practitioner_roles(organization="001-01-1001"))) == 6
    assert [r["id"] for r in directory.practitioner_roles(practitioner="003-000000")] == ["pr-0", "pr-second"]
    assert [s["name"] for s in directory.healthcare_services("001-01-1001")] == ["Coordination des parcours"]


def test_a_second_look_up_is_served_from_the_cache(directory: AnnuaireSante, ans: DirectoryServer) -> None:
    first = directory.practitioner("10000000002")
    assert first is not None
    first["name"] = []  # a caller's change does not reach the cached copy
    again = directory.practitioner("10000000002")
    assert again is not None and again["name"][0]["family"] == "Nom2"
    assert directory.practitioner("19999999999") is None
    assert directory.practitioner("19999999999") is None  # "not there" is cached too
    assert len(ans.requests) == 2


def test_the_cache_is_bounded_and_expires() -> None:
    now = [0.0]
    cache: TTLCache[str] = TTLCache(ttl=10.0, size=2, clock=lambda: now[0])
    cache.put(("a", "1"), "one")
    cache.put(("a", "2"), "two")
    cache.put(("a", "3"), "three")
    assert cache.get(("a", "1")) == (False, None) and len(cache) == 2
    now[0] = 11.0
    assert cache.get(("a", "3")) == (False, None)


def test_a_wrong_api_key_is_a_clear_refusal(ans: DirectoryServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = AnnuaireSante(ans.base_url, "wrong-key-0000", FAST)
    with pytest.raises(ConnectorError) as caught:
        client.practitioner("10000000001")
    assert caught.value.failure is Failure.REFUSED and caught.value.status == 401
    assert "API key was refused" in str(caught.value)
    assert "wrong-key-0000" not in str(caught.value) + repr(client) + caplog.text
    assert len(ans.requests) == 1  # a refusal is not retried


def test_the_api_key_is_never_shown_by_the_settings() -> None:
    settings = Settings.from_env(
        {"COORDINATION_ANNUAIRE_BASE_URL": "https://x/", "COORDINATION_ANNUAIRE_API_KEY": "s3cr3t"}
    )
    assert settings.annuaire.api_key == "s3cr3t" and settings.annuaire.base_url == "https://x"
    assert "s3cr3t" not in repr(settings)


def test_503_is_retried_then_an_unavailable_error(directory: AnnuaireSante, ans: DirectoryServer) -> None:
    ans.fail("503")
    with pytest.raises(ConnectorError) as caught:
        directory.practitioner("10000000001")
    assert caught.value.failure is Failure.UNAVAILABLE and caught.value.retryable
    assert len(ans.requests) == 1 + FAST.retries
    assert from_connector_error(caught.value).category.status == 502


def test_a_passing_503_is_retried_transparently(directory: AnnuaireSante, ans: DirectoryServer) -> None:
    ans.fail("503", times=1)
    assert directory.practitioner("10000000001") is not None
    assert len(ans.requests) == 2


def test_500_is_an_unavailable_error(directory: AnnuaireSante, ans: DirectoryServer) -> None:
    ans.fail("500")
    with pytest.raises(ConnectorError) as caught:
        directory.organization("330000001")
    assert caught.value.failure is Failure.UNAVAILABLE and caught.value.status == 500


def test_a_slow_directory_is_a_timeout(directory: AnnuaireSante, ans: DirectoryServer) -> None:
    ans.fail("slow")
    with pytest.raises(ConnectorError) as caught:
        directory.practitioner("10000000001")
    assert caught.value.failure is Failure.TIMEOUT and caught.value.retryable
    assert from_connector_error(caught.value).category.status == 504


@pytest.mark.parametrize("mode", ["not-json", "wrong-type"])
def test_malformed_answers_are_bad_answers(directory: AnnuaireSante, ans: DirectoryServer, mode: str) -> None:
    ans.fail(mode)
    with pytest.raises(ConnectorError) as caught:
        directory.practitioner("10000000001")
    assert caught.value.failure is Failure.BAD_ANSWER and not caught.value.retryable


@pytest.mark.parametrize(("mode", "message"), [("loop", "loop"), ("foreign-next", "another host")])
def test_next_links_that_loop_or_leave_the_directory_are_refused(
    directory: AnnuaireSante, ans: DirectoryServer, mode: str, message: str
) -> None:
    ans.fail(mode)
    with pytest.raises(ConnectorError, match=message) as caught:
        list(directory.organization_members("001-01-1001"))
    assert caught.value.failure is Failure.BAD_ANSWER
    assert all("elsewhere" not in path for path, _q in ans.requests)


def test_nothing_listens_is_unavailable() -> None:
    client = AnnuaireSante("http://127.0.0.1:9/fhir/v2", API_KEY, FAST)
    with pytest.raises(ConnectorError) as caught:
        client.practitioner("10000000001")
    assert caught.value.failure is Failure.UNAVAILABLE


def test_the_null_directory_refuses_every_look_up() -> None:
    """Issue 19: not configured is not "nobody found" (that would be an answer it cannot give)."""
    null = NullDirectory()
    assert not null.configured
    calls = [
        lambda: null.practitioner("10000000001"),
        lambda: null.organization("330000001"),
        lambda: null.organization_members("x"),
        lambda: null.healthcare_services("x"),
        lambda: null.practitioner_roles(organization="x"),
    ]
    for call in calls:
        with pytest.raises(ConnectorError) as caught:
            call()
        assert caught.value.failure is Failure.NOT_CONFIGURED
        assert "COORDINATION_ANNUAIRE_BASE_URL" in str(caught.value)
