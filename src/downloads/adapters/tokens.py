"""Bearer tokens: HMAC-signed (HS256 JWT) with a role, an issue time and an expiry.

Roles: ``service`` (every command and read), ``support`` (reads, history and
time travel only), ``admin`` (everything, plus the catalog).

A token lives at most its role's cap (:data:`DEFAULT_MAX_TTL`; configurable):
a token whose ``exp - iat`` is longer is refused even when correctly signed, so
a leaked secret's forgeries and a careless ``--ttl`` both expire. Rotation: the
signer verifies with its secret and, while given one, the previous secret, and
issues with the current one only (see ``docs/operations.md``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from downloads.errors import DownloadsError

__all__ = ["DEFAULT_MAX_TTL", "ROLES", "AuthError", "Principal", "TokenSigner", "new_secret", "parse_max_ttl"]

ROLES = ("service", "support", "admin")
#: the longest lifetime of a token per role, in seconds
DEFAULT_MAX_TTL: Mapping[str, int] = {"service": 30 * 86400, "support": 7 * 86400, "admin": 86400}
_ALGORITHM = "HS256"


class AuthError(DownloadsError):
    """The token is missing, malformed, badly signed or expired."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a role, and the subject the token was issued to."""

    role: str
    subject: str


def new_secret() -> str:
    """A fresh random secret for signing tokens."""
    return secrets.token_urlsafe(32)


def parse_max_ttl(text: str) -> dict[str, int]:
    """``service=30d,support=7d,admin=24h`` (roles not named keep their default) -> seconds per role."""
    from downloads.adapters.policy_file import PolicyError, parse_duration

    caps = dict(DEFAULT_MAX_TTL)
    for item in filter(None, (part.strip() for part in text.split(","))):
        role, sep, value = item.partition("=")
        if not sep or role.strip() not in ROLES:
            raise ValueError(f"token max TTL {item!r}: expected role=duration with a role of {', '.join(ROLES)}")
        try:
            caps[role.strip()] = int(parse_duration(value.strip(), f"token max TTL of {role.strip()}").total_seconds())
        except PolicyError as exc:
            raise ValueError(str(exc)) from exc
    return caps


def _check_secret(secret: str) -> str:
    if len(secret.encode()) < 32:
        raise ValueError("the auth secret must be at least 32 bytes long (HS256 needs a 256-bit key)")
    return secret


class TokenSigner:
    """Issues tokens with one secret; verifies with it and, during a rotation, the previous one."""

    def __init__(
        self, secret: str, *, previous: str | None = None, max_ttl: Mapping[str, int] = DEFAULT_MAX_TTL
    ) -> None:
        self._secret = _check_secret(secret)
        self._secrets = [self._secret] + ([_check_secret(previous)] if previous else [])
        self.max_ttl = dict(max_ttl)
        self._verified: dict[str, tuple[Principal, float]] = {}

    def issue(self, role: str, *, ttl_seconds: float = 3600, subject: str = "cli") -> str:
        """A token for ``role`` valid for ``ttl_seconds``; ``ValueError`` when that is not above 0
        or is past the role's cap."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
        ttl = int(ttl_seconds)
        if ttl < 1:
            raise ValueError("a token must live at least 1 second")
        if ttl > self.max_ttl[role]:
            raise ValueError(f"a {role} token may live at most {self.max_ttl[role]} seconds, not {ttl}")
        now = int(time.time())
        claims = {"role": role, "sub": subject, "iat": now, "exp": now + ttl}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> Principal:
        """The token's principal; raise :class:`AuthError` if it is not valid now.

        A token checked once is remembered until it expires (at most 10,000 of them), since
        clients send the same token with every request and checking the signature is the
        larger part of authenticating one.
        """
        known = self._verified.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        principal, expires = self._decode(token)
        if len(self._verified) >= 10_000:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        claims = None
        for secret in self._secrets:
            try:
                claims = jwt.decode(token, secret, algorithms=[_ALGORITHM], options={"require": ["exp", "iat", "role"]})
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError as exc:
                raise AuthError("the token has expired") from exc
            except (jwt.InvalidTokenError, OverflowError, ValueError, TypeError) as exc:
                # Absurd claims (an exp of 10**400, a string) are a bad token, never a server error.
                raise AuthError("the token is not valid") from exc
        if claims is None:
            raise AuthError("the token is not valid")
        role, issued, expires = claims.get("role"), claims.get("iat"), claims.get("exp")
        if role not in ROLES:
            raise AuthError("the token names no known role")
        if not isinstance(issued, int) or not isinstance(expires, int) or expires - issued > self.max_ttl[role]:
            raise AuthError(f"the token lives longer than a {role} token may")
        return Principal(role=str(role), subject=str(claims.get("sub", ""))), float(expires)
