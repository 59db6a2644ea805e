"""OAuth2 / SMART on FHIR authorization, access policies and audit (filled by the security issue)."""
