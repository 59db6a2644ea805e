"""Protocols: PlanDefinition $apply / $start, the shipped library, start on discharge."""
