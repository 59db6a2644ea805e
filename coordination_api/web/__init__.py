"""The HTTP edge: request parsing, content negotiation, headers and OperationOutcome rendering.

With the blueprints (fhir/, bulk/, auth's views) the only Flask-aware code; everything below it
(core, storage, search, outbox, coordination) is framework-free.
"""
