"""Everything that talks to outside systems (HL7 v2, Annuaire Santé, PSC, MSSanté…): later issues."""
