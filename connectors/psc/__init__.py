"""Pro Santé Connect (PSC): the national login of health professionals, as an OpenID Connect provider.

Authorization code flow (OpenID Connect Core 1.0 3.1) with ``acr_values=eidas1`` and the PSC scopes;
the ID token is checked (3.1.3.7: signature against the provider's JWKS, ``iss``, ``aud``, ``exp``,
``iat``, ``nonce``, and ``acr`` one of the ``acr_values`` asked, eidas1 by default), then the
UserInfo answer (JSON, or a JWT checked the same way) gives ``SubjectNameID`` = idNatPs = "8" + RPPS.
Optional RFC 7662 introspection of the PSC access token.
"""

from connectors.psc.client import (
    ALGORITHMS,
    NullProSanteConnect,
    ProSanteConnect,
    PscClient,
    PscClientSettings,
)
from connectors.psc.errors import NOT_CONFIGURED, SERVICE
from connectors.psc.mapping import PscIdentity, identity

__all__ = [
    "ALGORITHMS",
    "NOT_CONFIGURED",
    "SERVICE",
    "NullProSanteConnect",
    "ProSanteConnect",
    "PscClient",
    "PscClientSettings",
    "PscIdentity",
    "identity",
]
