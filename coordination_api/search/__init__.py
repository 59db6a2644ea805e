"""Search: parameter registry, parsing, SQL compilation and paging (R4 search.html)."""
