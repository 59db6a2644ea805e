"""Review rev2: access.visibility hands out its per-request cached list, and access.secure / hop_guard
extend it in place (``query.access += subscription_owner_filter(...)``): every Subscription search of a
batch adds one more owner filter to the clause all later statements of the request carry, so a batch
of n ``GET Subscription`` entries compiles O(n^2) filters (max_transaction_entries is 10,000)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from flask import Flask

from tests.support.auth import bearer, practitioner_user, session_key_ready, user_token

__all__ = ["session_key_ready"]  # autouse fixture


def _batch(n: int) -> dict[str, Any]:
    entries = [{"request": {"method": "GET", "url": "Subscription?_count=1"}} for _ in range(n)]
    return {"resourceType": "Bundle", "type": "batch", "entry": entries}


def _seconds(app: Flask, token: str, n: int) -> float:
    start = time.perf_counter()
    response = app.test_client().post(
        "/fhir",
        data=orjson.dumps(_batch(n)),
        headers={**bearer(token), "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.get_json()
    return time.perf_counter() - start


def test_a_batch_of_subscription_searches_costs_linear_time(app: Flask) -> None:
    practitioner_user(app)
    token = user_token(app, "user/*.cruds")
    small, large = _seconds(app, token, 100), _seconds(app, token, 400)
    # Linear: 4x the entries, about 4x the time (a generous 7x allowed); quadratic growth exceeds it.
    assert large < 7 * small, (small, large)
