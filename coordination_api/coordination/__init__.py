"""Domain workflows: discharge intake, protocol start, task dispatch."""
