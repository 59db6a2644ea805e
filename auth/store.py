"""Database access of the authorization server (clients, users, codes, tokens, assertion jtis)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from auth.models import CLIENT_SECRET_BASIC, Client, Token, User
from auth.schema import (
    login_attempt,
    login_failure,
    oauth_assertion_jti,
    oauth_client,
    oauth_client_sender,
    oauth_code,
    oauth_token,
    oauth_user,
    server_secret,
)
from auth.secrets import digest, hash_password, random_token, verify_password

ENDED_SESSION = "~login-session"  # not a client id (those are UUIDs): the ended sessions' rows
ACCOUNT = "*"  # the login_failure row counting a username's failures from every address
FORGET_AFTER = 24 * 3600  # consecutive failures older than this start again from zero


class _LockedError(Exception):
    """Rolls back the counting of an attempt on a locked username."""


@dataclass(frozen=True)
class Backoff:
    """Lock after ``threshold`` consecutive failures for ``base`` seconds, doubled at each further
    failure, never longer than ``cap``."""

    threshold: int
    base: int
    cap: int

    def delay(self, failures: int) -> int:
        if failures < self.threshold:
            return 0
        return int(min(self.cap, self.base * 2 ** min(failures - self.threshold, 30)))


class AuthStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- clients -------------------------------------------------------------------------------

    def create_client(
        self,
        name: str,
        scope: str,
        auth_method: str,
        redirect_uris: list[str],
        jwks: dict[str, Any] | None,
        jwks_uri: str | None,
    ) -> tuple[str, str | None]:
        client_id = str(uuid.uuid4())
        secret = random_token() if auth_method == CLIENT_SECRET_BASIC else None
        with self.engine.begin() as conn:
            conn.execute(
                insert(oauth_client).values(
                    client_id=client_id,
                    name=name,
                    auth_method=auth_method,
                    secret_hash=digest(secret) if secret else None,
                    scope=scope,
                    redirect_uris=json.dumps(redirect_uris),
                    jwks=json.dumps(jwks) if jwks else None,
                    jwks_uri=jwks_uri,
                    created_at=int(time.time()),
                    revoked=False,
                )
            )
        return client_id, secret

    def client(self, client_id: str) -> Client | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(oauth_client).where(oauth_client.c.client_id == client_id)).first()
        if row is None or row.revoked:
            return None
        return Client(
            client_id=row.client_id,
            name=row.name,
            auth_method=row.auth_method,
            secret_hash=row.secret_hash,
            scope=row.scope,
            redirect_uris=json.loads(row.redirect_uris or "[]"),
            jwks=row.jwks,
            jwks_uri=row.jwks_uri,
        )

    def list_clients(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(oauth_client).order_by(oauth_client.c.created_at)).all()
        return [
            {
                "client_id": r.client_id,
                "name": r.name,
                "auth": r.auth_method,
                "scope": r.scope,
                "redirect_uris": json.loads(r.redirect_uris or "[]"),
                "jwks_uri": r.jwks_uri,
                "revoked": bool(r.revoked),
            }
            for r in rows
        ]

    def revoke_client(self, client_id: str) -> bool:
        """Revoke the client and every token it holds."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(oauth_client).where(oauth_client.c.client_id == client_id).values(revoked=True)
            ).rowcount
            conn.execute(update(oauth_token).where(oauth_token.c.client_id == client_id).values(revoked=True))
        return bool(done)

    # -- message senders a client may send as (issue 16) ---------------------------------------

    def add_senders(self, client_id: str, senders: list[str]) -> None:
        """Bind senders (HL7 v2 ``MSH-3^MSH-4``, ``MessageHeader.source.endpoint``, NdE FINESS) to the
        client; a sender may be bound to several clients (e.g. a hospital's two interfaces)."""
        with self.engine.begin() as conn:
            known = set(
                conn.execute(
                    select(oauth_client_sender.c.sender).where(oauth_client_sender.c.client_id == client_id)
                ).scalars()
            )
            rows = [{"client_id": client_id, "sender": s} for s in dict.fromkeys(senders) if s not in known]
            if rows:  # an operator's command: a concurrent duplicate fails on the primary key
                conn.execute(insert(oauth_client_sender), rows)

    # -- users ---------------------------------------------------------------------------------

    def create_user(self, username: str, password: str | None, practitioner_id: str, rpps: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(oauth_user).values(
                    username=username,
                    password_hash=hash_password(password) if password else None,
                    practitioner_id=practitioner_id,
                    rpps=rpps,
                    created_at=int(time.time()),
                    failed_logins=0,
                    locked_until=0,
                    disabled=False,
                )
            )

    def user(self, username: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(oauth_user).where(oauth_user.c.username == username)).first()
        if row is None or row.disabled:
            return None
        return User(row.username, row.practitioner_id, row.rpps)

    def user_by_rpps(self, rpps: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(oauth_user).where(oauth_user.c.rpps == rpps)).first()
        return None if row is None or row.disabled else User(row.username, row.practitioner_id, row.rpps)

    def check_password(self, username: str, password: str) -> User | None:
        """The user when the password is right; one argon2 verification whatever the username (an
        unknown or disabled login costs the same as a wrong password: no enumeration by timing)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(oauth_user).where(oauth_user.c.username == username)).first()
        ok = verify_password(row.password_hash if row is not None else None, password)
        if row is None or row.disabled or not ok:
            return None
        return User(row.username, row.practitioner_id, row.rpps, int(time.time()))

    # -- login throttling ----------------------------------------------------------------------

    def begin_attempt(self, address: str) -> int:
        """Record a login attempt from this address before anything is checked (a failure until
        ``attempt_succeeded``), so that parallel attempts all count against the address throttle."""
        now = int(time.time())
        with self.engine.begin() as conn:
            pk = conn.execute(
                insert(login_attempt)
                .values(address=address[:64], at=now, success=False)
                .returning(login_attempt.c.pk)
            ).scalar_one()
            if pk % 64 == 0:  # cheap, occasional purge
                conn.execute(delete(login_attempt).where(login_attempt.c.at < now - 3600))
        return int(pk)

    def attempt_succeeded(self, pk: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(login_attempt).where(login_attempt.c.pk == pk).values(success=True))

    def attempts(self, address: str, window: int) -> tuple[int, int]:
        """(all attempts, failed attempts) from this address within the window."""
        since = int(time.time()) - window
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(login_attempt.c.success, func.count())
                .where(login_attempt.c.address == address[:64], login_attempt.c.at >= since)
                .group_by(login_attempt.c.success)
            ).all()
        counts = {bool(success): int(n) for success, n in rows}
        return sum(counts.values()), counts.get(False, 0)

    def login_locked(self, username: str, address: str) -> int:
        """Seconds this username is still locked from this address (its own lock or the account's)."""
        now = int(time.time())
        with self.engine.connect() as conn:
            until = conn.execute(
                select(func.max(login_failure.c.locked_until)).where(
                    login_failure.c.username == username[:150],
                    login_failure.c.address.in_([address[:64], ACCOUNT]),
                )
            ).scalar()
        return max(0, int(until or 0) - now)

    def count_attempt(self, username: str, address: str, rules: tuple[Backoff, Backoff]) -> list[int] | None:
        """Count this login attempt as a failure, before the password is checked (a good password then
        clears the counters), for (username, address) and for the username alone; None, counting
        nothing, when either is locked. One statement per counter, INSERT .. ON CONFLICT DO UPDATE SET
        failures = failures + 1 WHERE not locked RETURNING failures: no lost update, and an attempt
        that reaches a threshold sets the lock in the same transaction, so parallel attempts wait for
        it on the row and then find the lock (never more password checks than the threshold).
        ``rules`` is (per username and address, per username); returns the two counts."""
        now = int(time.time())
        table = login_failure
        name = username[:150]
        counts: list[int] = []
        try:
            with self.engine.begin() as conn:
                make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
                for scope, rule in zip((address[:64], ACCOUNT), rules, strict=True):
                    # Failures older than FORGET_AFTER are forgotten (a typo last month does not count).
                    stale = table.c.updated_at < now - FORGET_AFTER
                    stmt = (
                        make(table)
                        .values(username=name, address=scope, failures=1, locked_until=0, updated_at=now)
                        .on_conflict_do_update(
                            index_elements=[table.c.username, table.c.address],
                            set_={
                                "failures": case((stale, 1), else_=table.c.failures + 1),
                                "updated_at": now,
                            },
                            where=table.c.locked_until <= now,
                        )
                        .returning(table.c.failures)
                    )
                    failures = conn.execute(stmt).scalar()
                    if failures is None:
                        raise _LockedError
                    counts.append(int(failures))
                    delay = rule.delay(int(failures))
                    if delay:
                        conn.execute(
                            update(table)
                            .where(table.c.username == name, table.c.address == scope)
                            .values(locked_until=now + delay)
                        )
                if now % 32 == 0:  # cheap, occasional purge of forgotten counters
                    conn.execute(
                        delete(table).where(
                            table.c.updated_at < now - FORGET_AFTER, table.c.locked_until < now
                        )
                    )
        except _LockedError:
            return None
        return counts

    def clear_failures(self, username: str, address: str) -> None:
        """A successful login resets its address's counter and the account's."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(login_failure).where(
                    login_failure.c.username == username[:150],
                    login_failure.c.address.in_([address[:64], ACCOUNT]),
                )
            )

    # -- authorization codes -------------------------------------------------------------------

    def save_code(self, code: str, values: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(oauth_code).values(code_hash=digest(code), used=False, **values))

    def take_code(self, code: str, client_id: str) -> dict[str, Any] | None:
        """Mark the code used and return it; a second use revokes what the first one issued."""
        code_hash = digest(code)
        now = int(time.time())
        with self.engine.begin() as conn:
            row = conn.execute(select(oauth_code).where(oauth_code.c.code_hash == code_hash)).first()
            if row is None or row.client_id != client_id:
                return None
            claimed = conn.execute(
                update(oauth_code)
                .where(oauth_code.c.code_hash == code_hash, oauth_code.c.used.is_(False))
                .values(used=True)
            ).rowcount
            if not claimed:
                # RFC 6749 4.1.2 / 10.5: a replayed code revokes the tokens it already produced.
                conn.execute(
                    update(oauth_token).where(oauth_token.c.family == code_hash).values(revoked=True)
                )
                return None
            if row.expires_at <= now:
                return None
        return dict(row._mapping)

    # -- tokens --------------------------------------------------------------------------------

    def save_token(self, values: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(oauth_token).values(revoked=False, refresh_used=False, **values))

    def _token(self, column: Any, value: str) -> Token | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(oauth_token).where(column == digest(value))).first()
        return Token(**row._mapping) if row is not None else None

    def access_token(self, token: str) -> Token | None:
        return self._token(oauth_token.c.token_hash, token)

    def refresh_token(self, token: str) -> Token | None:
        return self._token(oauth_token.c.refresh_hash, token)

    def use_refresh_token(self, token: Token) -> bool:
        """Rotation (OAuth 2.0 Security BCP 4.14.2): a refresh token works once; a replay revokes
        the whole family, since either the client or an attacker holds a stolen copy."""
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(oauth_token)
                .where(oauth_token.c.token_hash == token.token_hash, oauth_token.c.refresh_used.is_(False))
                .values(refresh_used=True)
            ).rowcount
            if not claimed:
                conn.execute(
                    update(oauth_token).where(oauth_token.c.family == token.family).values(revoked=True)
                )
        return bool(claimed)

    def revoke_token(self, token: Token, whole_family: bool) -> None:
        with self.engine.begin() as conn:
            where = (
                oauth_token.c.family == token.family
                if whole_family
                else oauth_token.c.token_hash == token.token_hash
            )
            conn.execute(update(oauth_token).where(where).values(revoked=True))

    # -- client assertion replay ---------------------------------------------------------------

    def claim_assertion_jti(self, client_id: str, jti: str, expires_at: int) -> bool:
        """False when this jti was seen before (the primary key decides, RFC 7523 3 item 7)."""
        now = int(time.time())
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(oauth_assertion_jti).values(
                        client_id=client_id, jti=jti[:255], expires_at=expires_at
                    )
                )
        except IntegrityError:
            return False
        if int(now) % 16 == 0:  # cheap, occasional purge of expired jtis
            with self.engine.begin() as conn:
                conn.execute(delete(oauth_assertion_jti).where(oauth_assertion_jti.c.expires_at < now - 600))
        return True

    # -- ended login sessions --------------------------------------------------------------------
    # The session cookie is the session (signed, kept by the browser): a sign-out ends it here, by
    # its id, so that a copy of the cookie is worth nothing afterwards (review 24). Kept in the
    # never-twice table (client_id ENDED_SESSION) until the session would have expired anyway.

    def end_session(self, session_id: str, until: int) -> None:
        # False: ended already (a second sign-out of the same cookie), nothing to do.
        self.claim_assertion_jti(ENDED_SESSION, session_id, until)

    def session_ended(self, session_id: str) -> bool:
        with self.engine.connect() as conn:
            found = conn.execute(
                select(oauth_assertion_jti.c.expires_at).where(
                    oauth_assertion_jti.c.client_id == ENDED_SESSION,
                    oauth_assertion_jti.c.jti == session_id[:255],
                )
            ).first()
        return found is not None

    # -- shared secrets ------------------------------------------------------------------------

    def shared_secret(self, name: str) -> str:
        """A random secret generated once and shared by every process (e.g. the session cookie key)."""
        with self.engine.connect() as conn:
            value = conn.execute(select(server_secret.c.value).where(server_secret.c.name == name)).scalar()
        if value is not None:
            return str(value)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(server_secret).values(name=name, value=random_token(48)))
        except IntegrityError:
            pass  # another process created it first
        return self.shared_secret(name)
