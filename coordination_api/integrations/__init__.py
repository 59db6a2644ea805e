"""The application side of each outside service, one module each: what the app does with a connector
(wiring, jobs, listeners); the pure clients live in ``connectors/``."""
