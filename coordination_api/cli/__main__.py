"""``python -m coordination_api.cli`` (``serve`` starts its children so when no script is installed)."""

from coordination_api.cli import main

main()
