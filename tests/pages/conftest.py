"""The pages' shared fixture: a CPTS with a discharge posted and a Task offered."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Fhir
from tests.support.pages import Cpts, build_cpts, offer_task, post_discharge


@pytest.fixture
def cpts(app: Flask, client: FlaskClient, fhir: Fhir) -> Cpts:
    built = build_cpts(app, fhir)
    post_discharge(client, built)
    offer_task(fhir, built)
    return built
