"""SQL for search criteria, one module per parameter type (R4 search.html#ptypes); the dispatcher that
picks one for a ``name=value`` pair is :mod:`coordination_api.search.criteria`."""
