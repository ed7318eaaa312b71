"""Bearer tokens: HMAC-signed (HS256 JWT) with a role and an expiry.

Roles: ``service`` (every command and read), ``support`` (reads, history and
time travel only), ``admin`` (everything, plus the catalog).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

__all__ = ["ROLES", "AuthError", "Principal", "TokenSigner", "new_secret"]

ROLES = ("service", "support", "admin")
_ALGORITHM = "HS256"


class AuthError(Exception):
    """The token is missing, malformed, badly signed or expired."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a role, and the subject the token was issued to."""

    role: str
    subject: str


def new_secret() -> str:
    """A fresh random secret for signing tokens."""
    return secrets.token_urlsafe(32)


class TokenSigner:
    """Issues and verifies tokens with one secret."""

    def __init__(self, secret: str) -> None:
        if len(secret.encode()) < 32:
            raise ValueError("the auth secret must be at least 32 bytes long (HS256 needs a 256-bit key)")
        self._secret = secret
        self._verified: dict[str, tuple[Principal, float]] = {}

    def issue(self, role: str, *, ttl_seconds: float = 3600, subject: str = "cli") -> str:
        """A token for ``role`` valid for ``ttl_seconds``."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
        now = int(time.time())
        claims = {"role": role, "sub": subject, "iat": now, "exp": now + max(1, int(ttl_seconds))}
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
        try:
            claims = jwt.decode(token, self._secret, algorithms=[_ALGORITHM], options={"require": ["exp", "role"]})
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError("the token is not valid") from exc
        role = claims.get("role")
        if role not in ROLES:
            raise AuthError("the token names no known role")
        return Principal(role=str(role), subject=str(claims.get("sub", ""))), float(claims["exp"])
