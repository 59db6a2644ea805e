"""subscription_state.origin: the endpoint's origin key, one per listener however it is spelled
(review 20 F4, F6); the sending pool caps sends per origin and the claim queries skip a saturated one
by equality on this column.

Existing subscriptions get the key of their endpoint's spelling (scheme and host case, IDNA, trailing
dot, default port, IP literal forms); no name is resolved here (a migration must not depend on DNS).
A subscription written again later gets the key by the address its host then resolves to.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# Frozen copy of subscriptions/endpoint.py ``origin_key`` without addresses, as of this revision.
_MAIL = "mailto:"
_IPV4_SHORTHAND = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)(\.(0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")


def _literal(host: str) -> str | None:
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if not _IPV4_SHORTHAND.fullmatch(host):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return f"[{address.compressed}]" if isinstance(address, ipaddress.IPv6Address) else str(address)


def _origin(url: str) -> str:
    if url[: len(_MAIL)].lower() == _MAIL:
        return _MAIL
    try:
        parts = urlsplit(url.strip())
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return url.strip().lower()[:300]
    host = (parts.hostname or "").rstrip(".")
    if not parts.scheme or not host:
        return url.strip().lower()[:300]
    literal = _literal(host)
    if literal is None:
        try:
            literal = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            literal = host.lower()
    return f"{literal}:{port}"[:300]


def upgrade() -> None:
    op.add_column(
        "subscription_state",
        sa.Column("origin", sa.String(length=300), nullable=False, server_default=sa.text("''")),
    )
    st = sa.table("subscription_state", sa.column("res_pk"), sa.column("endpoint"), sa.column("origin"))
    conn = op.get_bind()
    for res_pk, url in conn.execute(sa.select(st.c.res_pk, st.c.endpoint)).all():
        conn.execute(sa.update(st).where(st.c.res_pk == res_pk).values(origin=_origin(str(url or ""))))


def downgrade() -> None:
    with op.batch_alter_table("subscription_state") as batch_op:
        batch_op.drop_column("origin")
