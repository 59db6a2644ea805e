"""The sending pool's caps and the SQL exclusion of saturated origins (sending.py)."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, literal, select

from coordination_api.config import SubscriptionSettings
from coordination_api.subscriptions.endpoint import MAIL_ORIGIN, ORIGIN_LENGTH, check, origin_key
from coordination_api.subscriptions.sending import Sender, outside


def test_caps_total_and_per_origin() -> None:
    sender = Sender(concurrency=3, per_origin=2)
    gate = threading.Event()
    try:
        assert sender.try_submit("https://a", gate.wait)
        assert sender.try_submit("https://a", gate.wait)
        assert not sender.try_submit("https://a", gate.wait)  # per-origin cap
        assert sender.saturated() == ["https://a"]
        assert sender.try_submit("https://b", gate.wait)
        assert not sender.try_submit("https://c", gate.wait)  # total cap
        assert sender.free() == 0
    finally:
        gate.set()
        sender.drain(5)
        sender.close()
    assert sender.busy() == 0


def test_a_failing_send_frees_its_slot() -> None:
    sender = Sender(concurrency=1, per_origin=1)

    def boom() -> None:
        raise RuntimeError("database gone")

    assert sender.try_submit("x", boom)
    sender.drain(5)
    assert sender.free() == 1
    sender.close()


SPELLINGS = [  # one listener (review 20 F4, F6): scheme and host case, trailing dot, default port,
    "http://127.0.0.1:8080/a",  # IPv4 shorthands, IPv6 forms of the same address
    "HTTP://127.0.0.1:8080/b",
    "http://127.1:8080",
    "http://0x7f.0.0.1:8080?x=1",
    "http://2130706433:8080#f",
    "http://[::ffff:127.0.0.1]:8080/",
    "hTtP://[0:0:0:0:0:ffff:7f00:1]:8080/c",
]


def test_every_spelling_of_one_listener_has_one_origin_key() -> None:
    assert {origin_key(url) for url in SPELLINGS} == {"127.0.0.1:8080"}
    names = [
        "https://Example.ORG./x",
        "https://example.org:443/y",
        "HTTPS://EXAMPLE.org",
        "http://example.org:443",
    ]
    assert {origin_key(url) for url in names} == {"example.org:443"}
    assert (
        origin_key("https://bücher.example/")
        == origin_key("https://XN--BCHER-KVA.example.")
        == ("xn--bcher-kva.example:443")
    )
    assert origin_key("http://[::1]:80/") == origin_key("http://[0:0::1]/") == "[::1]:80"
    # Positive controls: another port, another host, another address are other origins.
    assert (
        len(
            {
                origin_key(u)
                for u in ["http://127.0.0.1:8080", "http://127.0.0.1:8081", "http://127.0.0.2:8080"]
            }
        )
        == 3
    )


def test_two_names_of_one_host_share_the_origin_of_its_address() -> None:
    config = SubscriptionSettings(allow_loopback=True)
    resolved = {
        check(f"http://{host}:8080/hook", config) for host in ["localhost", "LOCALHOST", "127.1", "127.0.0.1"]
    }
    assert resolved == {"127.0.0.1:8080"}  # localhost resolves to 127.0.0.1 (and perhaps ::1): the lowest


def test_mailto_endpoints_share_one_origin() -> None:
    assert origin_key("mailto:dr.a@x.mssante.fr") == origin_key("MAILTO:b@Y.MSSANTE.FR") == MAIL_ORIGIN


def test_an_endless_endpoint_key_fits_its_column() -> None:
    assert len(origin_key("https://" + "a" * 5000 + "/")) <= ORIGIN_LENGTH
    assert len(origin_key("x" * 5000)) <= ORIGIN_LENGTH


keys = st.sampled_from(["a.example:443", "127.0.0.1:8080", "[::1]:80", MAIL_ORIGIN, "h_st%.example:443"])


@given(keys, st.lists(keys, max_size=3))
def test_sql_exclusion_is_equality_on_the_key(key: str, saturated: list[str]) -> None:
    """A row is skipped in SQL exactly when its origin key is saturated (no LIKE: no wildcard, no case
    rule of a database)."""
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        kept = conn.scalar(select(outside(literal(key).label("e"), saturated)))
    assert bool(kept) == (key not in saturated)
