"""FHIR R4 care-coordination backend for French CPTS."""

from coordination_api.app import create_app

__all__ = ["create_app"]
