"""FHIR R4 RESTful API: one module per interaction and operation."""
