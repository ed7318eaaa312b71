"""Personal data under each stream's own key, so that erasing the key forgets it (crypto-shredding).

History is never rewritten, so a member's personal fields are kept sealed under
a key of their stream's own (:mod:`~eskit.privacy.sealing`), kept wrapped by a
master key in a key store beside the events (:mod:`~eskit.privacy.keys`).
Erasing that key (:meth:`KeyRing.erase`) leaves every event where it stands and
makes its personal fields unreadable for good: they read as
:data:`~eskit.events.ERASED`. The codec seals and opens; the repository finds
the key and keeps it with the aggregate (:mod:`eskit.repository`).
"""

from eskit.privacy.keys import (
    ERASED_KEY,
    SECRET_BYTES,
    DataKey,
    ErasedKey,
    KeyRecord,
    KeyStore,
    MasterKey,
    MasterKeys,
    StreamKey,
)
from eskit.privacy.ring import KeyCache, KeyRing, Rewrapped
from eskit.privacy.sealing import SEALED, Encryption, is_sealed_state

__all__ = [
    "ERASED_KEY",
    "SEALED",
    "SECRET_BYTES",
    "DataKey",
    "Encryption",
    "ErasedKey",
    "KeyCache",
    "KeyRecord",
    "KeyRing",
    "KeyStore",
    "MasterKey",
    "MasterKeys",
    "Rewrapped",
    "StreamKey",
    "is_sealed_state",
]
