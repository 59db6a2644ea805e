"""The subscription fixtures (an app with fast retries, a real HTTP receiver, worker passes)."""

from tests.subscriptions.conftest import pump, receiver, sub_app, sub_fhir  # noqa: F401
