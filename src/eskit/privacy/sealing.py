"""Sealing: which parts of a stream's records are personal, and how they are kept under the stream's key.

An application tells the codec which streams hold personal data
(:class:`Encryption`, by stream id prefix) and which metadata fields are
personal; each event class names its personal fields (``DomainEvent.personal``).
In a covered stream, the codec takes those fields out of the payload it
encodes and keeps them, serialized together, as one AES-GCM box under the
stream's key::

    {"title_id": "t1", "at": "...", "$sealed": {"fields": ["device_id"], "box": "<base64>"}}

The box is bound (as associated data) to the stream, the event's id and the
record's kind, so it cannot be moved to another event. Everything else stays
in clear: readers that need only clear fields (reports) never need the key.

On read, a box opens with the stream's key. Once the key is erased, each field
the box named, and every field the event class calls personal that a payload
written in clear (before encryption) holds, reads as :data:`~eskit.events.ERASED`:
a stream's personal fields are never shown again, whatever it was written with.

A snapshot's state is sealed whole (:func:`seal_state`): it is a cache of
personal state, and no reader needs part of it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eskit.events import ERASED
from eskit.exceptions import KeyErased, PrivacyError, SerializationError
from eskit.privacy.keys import DataKey, ErasedKey, StreamKey

__all__ = [
    "SEALED",
    "STATE_MAGIC",
    "Encryption",
    "is_sealed_state",
    "open_fields",
    "open_state",
    "seal_fields",
    "seal_state",
]

#: the payload key that holds a record's sealed fields
SEALED = "$sealed"
#: how a sealed snapshot state starts (never the first byte of JSON)
STATE_MAGIC = b"\xffeskit-sealed-1\x00"


@dataclass(frozen=True)
class Encryption:
    """Which streams hold personal data, and which metadata fields of their events are personal.

    ``streams``: prefixes of the covered stream ids (``("account-",)``). ``metadata``: the fields of
    :class:`~eskit.events.EventMetadata` that are sealed in a covered stream (``command`` and
    ``recorded_at`` never are: they are how a stream is read and ordered).
    """

    streams: tuple[str, ...]
    metadata: tuple[str, ...] = ("request_id", "causation_id", "extra")

    def __post_init__(self) -> None:
        unknown = set(self.metadata) - {"request_id", "causation_id", "extra"}
        if unknown:
            raise ValueError(f"metadata fields that cannot be sealed: {', '.join(sorted(unknown))}")

    def covers(self, stream_id: str) -> bool:
        return stream_id.startswith(self.streams)


def seal_fields(
    values: dict[str, Any], names: Iterable[str], key: StreamKey, aad: bytes, dumps: Any, *, stream_id: str
) -> dict[str, Any]:
    """``values`` (changed in place) with the fields ``names`` (those present and not None) moved into a box
    under ``key``.

    Nothing personal to seal: ``values`` as they are, whatever ``key``. Raises
    :class:`~eskit.exceptions.KeyErased` for an erased key and
    :class:`~eskit.exceptions.PrivacyError` for none (a covered stream is never written in clear).
    """
    personal = {name: values[name] for name in names if values.get(name) is not None}
    if not personal:
        return values
    if isinstance(key, ErasedKey):
        raise KeyErased(stream_id)
    if not isinstance(key, DataKey):
        raise PrivacyError(f"{stream_id!r} holds personal data and no key was given to seal it")
    box = key.seal(dumps(personal), aad)
    for name in personal:  # ``values`` is the caller's own dict, made for this record
        del values[name]
    values[SEALED] = {"fields": sorted(personal), "box": base64.b64encode(box).decode("ascii")}
    return values


def open_fields(
    values: dict[str, Any], key: StreamKey, aad: bytes, loads: Any, *, where: str
) -> tuple[dict[str, Any], bool]:
    """``values`` with its box (if any) opened back into fields, and whether they were erased.

    With an erased key the box's fields read as :data:`~eskit.events.ERASED`. Raises
    :class:`~eskit.exceptions.SerializationError` for a box without a key, or one that does not open
    (altered, or moved from another event); ``where`` names the record in the message.
    """
    sealed = values.get(SEALED)
    if sealed is None:
        return values, isinstance(key, ErasedKey)
    opened = {name: value for name, value in values.items() if name != SEALED}
    try:
        fields = [str(name) for name in sealed["fields"]]
        box = base64.b64decode(sealed["box"], validate=True)
    except (KeyError, TypeError, binascii.Error, ValueError):
        raise SerializationError(f"{where}: its sealed fields are malformed") from None
    if isinstance(key, ErasedKey):
        opened.update(dict.fromkeys(fields, ERASED))
        return opened, True
    if not isinstance(key, DataKey):
        raise SerializationError(f"{where}: sealed with its stream's key, which this store does not hold")
    try:
        personal = loads(key.open(box, aad))
    except ValueError as exc:
        raise SerializationError(f"{where}: {exc}") from None
    opened.update(personal)
    return opened, False


def seal_state(state: bytes, key: StreamKey, aad: bytes) -> bytes | None:
    """A snapshot's state sealed whole under a live ``key``; None when there is none to seal it with."""
    if not isinstance(key, DataKey):
        return None
    return STATE_MAGIC + key.seal(state, aad)


def is_sealed_state(state: bytes) -> bool:
    return state.startswith(STATE_MAGIC)


def open_state(state: bytes, key: StreamKey, aad: bytes) -> bytes:
    """The state :func:`seal_state` sealed; ``ValueError`` when there is no live key or it does not open."""
    if not isinstance(key, DataKey):
        raise ValueError("the snapshot is sealed and the stream's key is not at hand (erased, or none)")
    return key.open(state[len(STATE_MAGIC) :], aad)
