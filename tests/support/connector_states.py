"""The connector states of an app configured with none (what /readyz reports by default)."""

ALL_OFF = {"dmp": "off", "eparcours": "off", "mssante": "off", "annuaire": "off", "psc": "off"}
