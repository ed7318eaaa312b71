"""Keys: each stream's own data key, wrapped by a master key, kept by a key store beside the events.

* :class:`MasterKey` is a 256-bit secret an application gets from its
  environment; :class:`MasterKeys` is the current one and those before a
  rotation. A master key never reaches a store: it only wraps and unwraps.
* A stream's :class:`DataKey` is a random 256-bit AES-GCM key, made the first
  time the stream has something personal to seal. The store keeps it wrapped
  (AES-GCM under the master key, bound to the stream's id) in a
  :class:`KeyRecord`, never in the clear.
* Erasing a stream's key replaces its record by a *tombstone* (when, and no key
  bytes). A tombstone is never undone: no key is made again for that stream, and
  a load (import, copy) never puts a key where a tombstone stands.

The :class:`KeyStore` port is kept by every store (memory, SQLite, Cassandra)
beside its events, so keys are replicated, backed up and moved like them.
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eskit.exceptions import MasterKeyError

__all__ = [
    "ERASED_KEY",
    "SECRET_BYTES",
    "DataKey",
    "ErasedKey",
    "KeyRecord",
    "KeyStore",
    "MasterKey",
    "MasterKeys",
    "StreamKey",
]

#: the size of every key (AES-256)
SECRET_BYTES = 32
_NONCE = 12


def _aead_seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)  # random 96-bit nonces: safe far beyond any stream's number of events
    return nonce + aead.encrypt(nonce, plaintext, aad)


@dataclass(frozen=True)
class MasterKey:
    """A master key: 32 secret bytes, named by ``id`` (a digest that reveals nothing of the secret)."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != SECRET_BYTES:
            raise MasterKeyError(f"a master key is {SECRET_BYTES} bytes, not {len(self.secret)}")

    @property
    def id(self) -> str:
        return hashlib.sha256(b"eskit master key id\x00" + self.secret).hexdigest()[:16]

    @classmethod
    def parse(cls, text: str) -> MasterKey:
        """A key from its text: base64 (standard or URL-safe, padded or not) or 64 hex digits.

        Raises :class:`~eskit.exceptions.MasterKeyError` for anything else, without quoting it.
        """
        text = text.strip()
        decoded: bytes | None = None
        if len(text) == 2 * SECRET_BYTES:
            try:
                decoded = bytes.fromhex(text)
            except ValueError:
                decoded = None
        if decoded is None:
            try:
                padded = text + "=" * (-len(text) % 4)
                decoded = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
            except (binascii.Error, ValueError):
                decoded = None
        if decoded is None or len(decoded) != SECRET_BYTES:
            raise MasterKeyError(
                f"a master key is {SECRET_BYTES} random bytes written in base64 or hex "
                "(make one with `downloads keys new`)"
            )
        return cls(decoded)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(SECRET_BYTES))

    def text(self) -> str:
        """The key as URL-safe base64 without padding (what :meth:`parse` reads)."""
        return base64.urlsafe_b64encode(self.secret).decode("ascii").rstrip("=")


class MasterKeys:
    """The master key that wraps new keys, and the ones before a rotation, which still unwrap."""

    def __init__(self, current: MasterKey, previous: Sequence[MasterKey] = ()) -> None:
        self.current = current
        self._by_id = {key.id: AESGCM(key.secret) for key in (*previous, current)}

    @property
    def ids(self) -> list[str]:
        """The ids of every master key known, the current one last."""
        return list(self._by_id)

    def wrap(self, subject: str, secret: bytes) -> tuple[str, bytes]:
        """``secret`` wrapped for ``subject`` by the current master key: ``(master id, wrapped bytes)``."""
        return self.current.id, _aead_seal(self._by_id[self.current.id], secret, _wrap_aad(subject))

    def unwrap(self, record: KeyRecord) -> bytes:
        """The secret of a live key record; :class:`~eskit.exceptions.MasterKeyError` when no known master
        key wrapped it, or it does not open (altered, or wrapped for another subject)."""
        if record.wrapped is None or record.master_id is None:
            raise MasterKeyError(f"the key of {record.subject!r} was erased")
        aead = self._by_id.get(record.master_id)
        if aead is None:
            raise MasterKeyError(
                f"the key of {record.subject!r} was wrapped by master key {record.master_id}, which is not "
                f"configured (known: {', '.join(self._by_id)}): set the master key (or the previous master key "
                "during a rotation) to the one this store was written with"
            )
        wrapped = record.wrapped
        try:
            return aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _wrap_aad(record.subject))
        except (InvalidTag, ValueError):
            raise MasterKeyError(
                f"the key of {record.subject!r} does not open with master key {record.master_id}: "
                "its record was altered or belongs to another stream"
            ) from None


def _wrap_aad(subject: str) -> bytes:
    return b"eskit key\x00" + subject.encode("utf-8")


class DataKey:
    """A stream's own key, unwrapped (held in memory only): seals and opens that stream's personal fields."""

    __slots__ = ("_aead", "subject")

    def __init__(self, subject: str, secret: bytes) -> None:
        if len(secret) != SECRET_BYTES:
            raise MasterKeyError(f"the key of {subject!r} is {len(secret)} bytes, not {SECRET_BYTES}")
        self.subject = subject
        self._aead = AESGCM(secret)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """A random nonce, then the ciphertext and its tag: only this key opens it, and only with ``aad``."""
        return _aead_seal(self._aead, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """What :meth:`seal` sealed; ``ValueError`` when it was altered, sealed under another key or another ``aad``."""
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
        except InvalidTag:
            raise ValueError("it does not open with the stream's key (altered, or sealed for another event)") from None

    def __repr__(self) -> str:
        return f"DataKey({self.subject!r})"


class ErasedKey:
    """The state of a stream whose key was erased (one instance, :data:`ERASED_KEY`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ERASED_KEY"


#: a stream whose key was erased
ERASED_KEY: Final = ErasedKey()

#: what is known of a stream's key: its key, erased, or none made yet (or not a stream that has one)
StreamKey = DataKey | ErasedKey | None


@dataclass(frozen=True)
class KeyRecord:
    """A stream's key as a store keeps it: wrapped, by which master key, since when; or a tombstone."""

    subject: str
    master_id: str | None
    wrapped: bytes | None = field(repr=False)
    created_at: datetime
    erased_at: datetime | None = None

    @property
    def erased(self) -> bool:
        return self.erased_at is not None

    @classmethod
    def tombstone(cls, subject: str, at: datetime, *, created_at: datetime | None = None) -> KeyRecord:
        return cls(subject, None, None, created_at or at, at)


class KeyStore(abc.ABC):
    """Port: each stream's wrapped key, or its tombstone, kept beside the events (same file or keyspace)."""

    @abc.abstractmethod
    def get(self, subject: str) -> KeyRecord | None:
        """The subject's record, or None when it never had one."""

    @abc.abstractmethod
    def create(self, record: KeyRecord) -> KeyRecord:
        """Keep ``record`` (a live key) unless the subject has a record already; return what is kept then.

        Two writers racing both get the same answer (the first one's key, or a tombstone): a stream
        never has two keys.
        """

    @abc.abstractmethod
    def erase(self, subject: str, at: datetime) -> KeyRecord:
        """Replace the subject's key by a tombstone (one stands even where it had none); return it.

        Idempotent: erasing again keeps the first erasure's time. Once it returns, the key is gone
        from every replica a later read may use (a backend says how it removes the bytes from disk).
        """

    @abc.abstractmethod
    def rewrap(self, old: KeyRecord, master_id: str, wrapped: bytes) -> bool:
        """Replace the wrapping of a live key that is still as ``old`` says; False (nothing done) when it
        changed meanwhile (erased, or rewrapped by someone else)."""

    @abc.abstractmethod
    def scan(self, *, after: str | None = None, limit: int = 1000) -> list[KeyRecord]:
        """Up to ``limit`` records after subject ``after``, in the store's order (stable, as ``stream_ids``)."""

    @abc.abstractmethod
    def load(self, records: Sequence[KeyRecord]) -> int:
        """Bring records from elsewhere (an import, a copy); return how many changed the store.

        A tombstone always lands (over a live key too, keeping an earlier erasure's time); a live
        key lands only where the subject has no record. So no load brings back an erased key.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (most key stores share the event store's)."""
