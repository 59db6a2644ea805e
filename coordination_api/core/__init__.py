"""The write core, framework-free (no Flask, no flask.g): who acts (principal), the writes (create,
update, delete and their conditional forms), resource validation, and the hooks create_app registers.
The HTTP adapters in fhir/ and the domain (coordination/, directory, accounts) both call it."""
