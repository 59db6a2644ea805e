"""OAuth2 / SMART on FHIR authorization server (authlib), login and consent pages, Pro Santé Connect login,
the access policy (care team, droit d'opposition, break-the-glass) and the audit trail."""
