"""Pure clients of outside systems, one package each: HL7 v2 (hl7v2), Annuaire Santé (annuaire), Pro Santé
Connect (psc), MSSanté (mssante), the e-parcours platform (eparcours), DMP through MHD (mhd); ``events``
holds the encounter event the intake doors share. They never import coordination_api; all outbound HTTP
goes through connectors/http.py and failures are reported as connectors/errors.py."""
