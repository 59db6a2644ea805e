#!/usr/bin/env python3
"""Dispatch: a professional accepts a Task offered to them (docs/integration.md section 3).

1. The coordination system (client credentials) records the patient's cercle de soins
   (careteam-bundle.json) and posts an open nursing Task (task-offer-bundle.json): the server offers it
   to the care team's usual nurse (Task.restriction.recipient, businessStatus offered-usual).
2. The nurse signs in to her practice software (SMART App Launch: authorization code + PKCE, a public
   client), sees the offer in ``Task?status=requested`` and accepts it: PUT with ``If-Match`` on the
   offered version, ``status: accepted``, ``owner`` = her Practitioner (the token's ``fhirUser``).
3. Accepting again with the old version answers 412: someone (here she) took it first.

Environment: BASE_URL, CLIENT_ID, CLIENT_SECRET, APP_CLIENT_ID, APP_REDIRECT_URI, NURSE_USERNAME,
NURSE_PASSWORD (examples/README.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import sys
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

HERE = Path(__file__).resolve().parent
BASE = os.environ.get("BASE_URL", "http://127.0.0.1:8080").rstrip("/")
FHIR = f"{BASE}/fhir"
FHIR_JSON = "application/fhir+json"


def fail(message: str, answer: requests.Response | None = None) -> None:
    detail = f" -> {answer.status_code} {answer.text[:500]}" if answer is not None else ""
    sys.exit(f"task_accept: {message}{detail}")


def expect(answer: requests.Response, *statuses: int) -> requests.Response:
    if answer.status_code not in statuses:
        fail(f"{answer.request.method} {answer.url}: expected {statuses}", answer)
    return answer


def system_token() -> str:
    answer = requests.post(
        f"{BASE}/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
        auth=(os.environ["CLIENT_ID"], os.environ["CLIENT_SECRET"]),
        timeout=30,
    )
    return str(expect(answer, 200).json()["access_token"])


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    if match is None:
        fail("no csrf_token on the page")
    return match.group(1) if match else ""


def user_token(username: str, password: str) -> dict[str, str]:
    """SMART App Launch as a browser would do it: authorize, login page, consent page, code exchange."""
    client_id, redirect = os.environ["APP_CLIENT_ID"], os.environ["APP_REDIRECT_URI"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect,
        "scope": "openid fhirUser user/*.cruds",
        "state": state,
        "aud": FHIR,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    browser = requests.Session()
    authorize = expect(browser.get(f"{BASE}/auth/authorize", params=params, allow_redirects=False), 302, 303)
    authorize_url = authorize.url
    login_url = urljoin(authorize_url, authorize.headers["Location"])  # the login page, next=authorize
    page = expect(browser.get(login_url), 200)
    next_url = parse_qs(urlsplit(login_url).query).get("next", [""])[0]
    form = {"username": username, "password": password, "csrf_token": csrf(page.text), "next": next_url}
    expect(browser.post(f"{BASE}/auth/login", data=form, allow_redirects=False), 302, 303)
    consent = expect(browser.get(authorize_url), 200)  # the consent page
    action = re.search(r'<form method="post" action="([^"]*)" id="consent-form"', consent.text)
    target = urljoin(authorize_url, action.group(1).replace("&amp;", "&")) if action else authorize_url
    approved = browser.post(
        target, data={"csrf_token": csrf(consent.text), "decision": "approve"}, allow_redirects=False
    )
    expect(approved, 302, 303)
    query = parse_qs(urlsplit(approved.headers["Location"]).query)
    if query.get("state") != [state] or "code" not in query:
        fail(f"unexpected redirect {approved.headers['Location']}")
    exchanged = requests.post(
        f"{BASE}/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": redirect,
            "client_id": client_id,  # a public client: no secret, PKCE proves it
            "code_verifier": verifier,
        },
        timeout=30,
    )
    return dict(expect(exchanged, 200).json())


def post_bundle(token: str, name: str) -> list[dict[str, str]]:
    bundle = json.loads((HERE / name).read_text(encoding="utf-8"))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
    answer = expect(requests.post(FHIR, json=bundle, headers=headers, timeout=30), 200)
    return [entry["response"] for entry in answer.json()["entry"]]


def main() -> None:
    system = system_token()
    post_bundle(system, "careteam-bundle.json")
    (created,) = post_bundle(system, "task-offer-bundle.json")
    task_id = created["location"].split("/Task/")[1].split("/")[0]
    print(f"Task/{task_id} posted, {created['etag']}")

    tokens = user_token(os.environ["NURSE_USERNAME"], os.environ["NURSE_PASSWORD"])
    me = tokens.get("fhirUser") or ""
    if not me:  # the fhirUser claim of the access token (RFC 9068 JWT) when the answer has no field
        payload = tokens["access_token"].split(".")[1]
        me = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["fhirUser"]
    practitioner = "Practitioner/" + me.rsplit("/Practitioner/", 1)[1]
    nurse = {"Authorization": f"Bearer {tokens['access_token']}", "Accept": FHIR_JSON}
    print(f"signed in as {practitioner}")

    offers = expect(
        requests.get(f"{FHIR}/Task", params={"status": "requested"}, headers=nurse, timeout=30), 200
    )
    offered = [e["resource"] for e in offers.json().get("entry", []) if e["resource"]["id"] == task_id]
    if not offered:
        fail(f"Task/{task_id} is not among the offers of {practitioner}", offers)
    task = offered[0]
    recipients = [r.get("reference") for r in task.get("restriction", {}).get("recipient", [])]
    if practitioner not in recipients:
        fail(f"Task/{task_id} is offered to {recipients}, not {practitioner}")

    current = expect(requests.get(f"{FHIR}/Task/{task_id}", headers=nurse, timeout=30), 200)
    etag = current.headers["ETag"]  # W/"2": the offered version
    accepted = {**current.json(), "status": "accepted", "owner": {"reference": practitioner}}
    headers = {**nurse, "Content-Type": FHIR_JSON, "If-Match": etag}
    answer = expect(requests.put(f"{FHIR}/Task/{task_id}", json=accepted, headers=headers, timeout=30), 200)
    print(
        f"accepted: {answer.json()['status']}, owner {answer.json()['owner']['reference']},",
        answer.headers["ETag"],
    )

    again = requests.put(f"{FHIR}/Task/{task_id}", json=accepted, headers=headers, timeout=30)
    expect(again, 412)  # the offered version is gone: whoever comes second is told so
    print("a second accept on the old version: 412 Precondition Failed")


if __name__ == "__main__":
    main()
