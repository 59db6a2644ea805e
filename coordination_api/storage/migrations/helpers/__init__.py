"""What migrations share, frozen: a migration must do the same thing whenever it runs, so it imports
neither auth/ nor the live code whose rules change (policy rows, compartment definitions, schema
objects). Once a released migration uses a helper, the helper does not change: a later migration that
needs other behaviour gets its own.

The one exception is re-indexing (``reindex``): index rows are what the current code searches, so a
migration that rewrites them uses the current indexer, on the tables as they are at its revision.
"""
