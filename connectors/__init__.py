"""Pure clients of outside systems (HL7 v2, Annuaire Santé, PSC, MSSanté, e-parcours, MHD), one package
each; ``events`` holds the encounter event the intake doors share. They never import coordination_api;
all outbound HTTP goes through ``connectors.http``."""
