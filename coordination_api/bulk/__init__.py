"""FHIR Bulk Data Access IG 2.0.0 ``$export`` (http://hl7.org/fhir/uv/bulkdata/export.html).

- kickoff.py: the kick-off request (parameters, who may export what) -> a job row
- jobs.py: the job table (creation with a per-client limit, leases, checkpoints, cancel, expiry)
- export.py: the producer the delivery worker runs (``run_due``): keyset pages of the resource table,
  the version current at ``transactionTime``, NDJSON files
- files.py: the export directory, the NDJSON writer and the streamed download
- views.py: the HTTP side (kick-off, status, delete, download) on the FHIR blueprint

Heavy modules are imported by their users, not here (the worker and the routes import what they need).
"""
