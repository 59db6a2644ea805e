"""Storage: schema, engine, migrations and the resource repository."""
