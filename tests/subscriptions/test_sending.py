"""The sending pool's caps and the SQL exclusion of saturated origins (sending.py)."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, literal, select

from coordination_api.subscriptions.sending import MAIL, Sender, origin, outside


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


hosts = st.sampled_from(["a.example", "b.example", "127.0.0.1:8443", "h_st%.example"])
paths = st.sampled_from(["", "/", "/hook", "/hook?x=1", "?q", "#f", "/a%/b_"])


@given(hosts, paths, st.lists(hosts, max_size=3), st.sampled_from(["https", "http"]))
def test_sql_exclusion_matches_origin_in_python(
    host: str, path: str, saturated: list[str], scheme: str
) -> None:
    """A row is skipped in SQL exactly when its endpoint's origin is saturated (LIKE wildcards in host
    names are escaped)."""
    endpoint = f"{scheme}://{host}{path}"
    keys = [f"{scheme}://{h}" for h in saturated]
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        kept = conn.scalar(select(outside(literal(endpoint).label("e"), keys)))
    assert bool(kept) == (origin(endpoint) not in keys)


def test_mailto_endpoints_share_one_origin() -> None:
    assert origin("mailto:dr.a@x.mssante.fr") == origin("MAILTO:b@y.mssante.fr") == MAIL
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        assert not conn.scalar(select(outside(literal("mailto:c@z.mssante.fr"), [MAIL])))
