"""Encoding events and snapshots: a serializer port, a type registry, upcasters.

* :class:`Serializer` turns a JSON-like dict into bytes and back; the default
  :class:`OrjsonSerializer` uses orjson.
* :class:`Upcasters` holds pure functions ``dict -> dict`` that bring a stored
  payload from schema version *n* to *n + 1*; on read, the chain from the stored
  version to the current one is applied. Rows are never rewritten.
* :class:`EventCodec` maps stable type names to event classes and turns
  ``(DomainEvent, EventMetadata)`` into a :class:`~eskit.events.NewEvent` and
  a :class:`~eskit.events.StoredEvent` back into both. Given an
  :class:`~eskit.privacy.Encryption`, it seals the personal fields of the
  streams it covers with each stream's key, and opens them on read
  (:mod:`eskit.privacy.sealing`); upcasters see the opened payload.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from eskit.events import ERASED, DomainEvent, EventMetadata, NewEvent, StoredEvent
from eskit.exceptions import SerializationError, UnknownEventType, UpcastError
from eskit.privacy.keys import StreamKey
from eskit.privacy.sealing import SEALED, Encryption, open_fields, seal_fields

__all__ = [
    "EventCodec",
    "OrjsonSerializer",
    "Serializer",
    "Upcaster",
    "Upcasters",
]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Serializer(abc.ABC):
    """Port: turns a JSON-like mapping into bytes and back, losslessly."""

    @abc.abstractmethod
    def dumps(self, value: Mapping[str, Any]) -> bytes:
        """Encode ``value``; raise :class:`SerializationError` if it cannot be."""

    @abc.abstractmethod
    def loads(self, data: bytes) -> dict[str, Any]:
        """Decode bytes made by :meth:`dumps`; raise :class:`SerializationError` on garbage."""


class OrjsonSerializer(Serializer):
    """JSON via orjson: fast, UTF-8, datetimes written as ISO 8601 strings."""

    def dumps(self, value: Mapping[str, Any]) -> bytes:
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise SerializationError(f"cannot encode payload: {exc}") from exc

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"cannot decode payload: {exc}") from exc
        if not isinstance(value, dict):
            raise SerializationError("payload is not a JSON object")
        return value


class Upcasters:
    """Chains of upcasters per type name, from each old version to the next."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, type_name: str, from_version: int, upcaster: Upcaster) -> None:
        """Register the step that turns version ``from_version`` into ``from_version + 1``."""
        key = (type_name, from_version)
        if key in self._steps:
            raise ValueError(f"an upcaster for {type_name!r} v{from_version} is already registered")
        self._steps[key] = upcaster

    def can_upcast(self, type_name: str, from_version: int, to_version: int) -> bool:
        """Tell whether every step from ``from_version`` to ``to_version`` is registered."""
        return all((type_name, v) in self._steps for v in range(from_version, to_version))

    def upcast(self, type_name: str, data: dict[str, Any], from_version: int, to_version: int) -> dict[str, Any]:
        """Apply the chain; raise :class:`UpcastError` if a step is missing or fails."""
        if from_version > to_version:
            raise UpcastError(f"{type_name!r} was stored as v{from_version}, newer than this code's v{to_version}")
        for version in range(from_version, to_version):
            step = self._steps.get((type_name, version))
            if step is None:
                raise UpcastError(f"no upcaster for {type_name!r} from v{version} to v{version + 1}")
            try:
                data = step(dict(data))
            except Exception as exc:  # an upcaster is user code: report which step failed
                raise UpcastError(f"upcaster for {type_name!r} v{version} -> v{version + 1} failed: {exc!r}") from exc
        return data


class EventCodec:
    """Registry of event classes by stable type name, with their upcasters."""

    def __init__(
        self,
        events: Iterable[type[DomainEvent]] = (),
        *,
        serializer: Serializer | None = None,
        upcasters: Upcasters | None = None,
        encryption: Encryption | None = None,
    ) -> None:
        self.serializer = serializer or OrjsonSerializer()
        self.upcasters = upcasters or Upcasters()
        #: which streams' personal fields are sealed with the stream's key (None: none)
        self.encryption = encryption
        self._classes: dict[str, type[DomainEvent]] = {}
        for cls in events:
            self.register(cls)

    def register(self, cls: type[DomainEvent]) -> None:
        """Register an event class under its ``type_name`` (which must be set and unique)."""
        if not cls.type_name:
            raise ValueError(f"{cls.__name__} has no type_name")
        known = self._classes.get(cls.type_name)
        if known is not None and known is not cls:
            raise ValueError(f"type name {cls.type_name!r} is used by {known.__name__} already")
        self._classes[cls.type_name] = cls

    def seals(self, stream_id: str) -> bool:
        """Whether the personal fields of ``stream_id``'s events are sealed with its key."""
        return self.encryption is not None and self.encryption.covers(stream_id)

    def encode(
        self, event: DomainEvent, metadata: EventMetadata, *, stream_id: str | None = None, key: StreamKey = None
    ) -> NewEvent:
        """Encode an event and its metadata for appending to ``stream_id``.

        In a stream the codec seals, the personal fields are sealed with ``key``: raises
        :class:`~eskit.exceptions.KeyErased` when it was erased and there is something personal to
        write, :class:`~eskit.exceptions.PrivacyError` when none is given. Without a ``stream_id``
        nothing is sealed (events of no particular stream, in tests and tools).
        """
        cls = type(event)
        if self._classes.get(cls.type_name) is not cls:
            raise UnknownEventType(cls.type_name or cls.__name__)
        event_id = uuid.uuid4()
        data = event.to_dict()
        meta = self._metadata_values(metadata)
        if stream_id is not None and self.encryption is not None and self.encryption.covers(stream_id):
            dumps = self.serializer.dumps
            aad = _aad(stream_id, cls.type_name, event_id)
            data = seal_fields(data, cls.personal, key, b"d" + aad, dumps, stream_id=stream_id)
            meta = seal_fields(meta, self.encryption.metadata, key, b"m" + aad, dumps, stream_id=stream_id)
        return NewEvent(
            type_name=cls.type_name,
            schema_version=cls.version,
            data=self.serializer.dumps(data),
            metadata=self.serializer.dumps(meta),
            recorded_at=metadata.recorded_at,
            event_id=event_id,
        )

    def decode(self, stored: StoredEvent, *, key: StreamKey = None) -> tuple[DomainEvent, EventMetadata]:
        """Decode a stored event, upcasting its payload to the class's current version.

        Sealed fields open with ``key`` (the stream's). With an erased key, every personal field
        reads as :data:`~eskit.events.ERASED`: those that were sealed, and those of an event
        written in clear before its stream was sealed; the metadata then says ``erased``. Raises
        :class:`~eskit.exceptions.SerializationError` for sealed fields without their key, or
        that do not open.
        """
        cls = self._classes.get(stored.type_name)
        if cls is None:
            raise UnknownEventType(stored.type_name)
        data = self.serializer.loads(stored.data)
        aad = _aad(stored.stream_id, stored.type_name, stored.event_id)
        where = f"{stored.stream_id}@{stored.position}"
        data, erased = open_fields(data, key, b"d" + aad, self.serializer.loads, where=where)
        if stored.schema_version != cls.version:
            data = self.upcasters.upcast(stored.type_name, data, stored.schema_version, cls.version)
        if erased:
            data.update((name, ERASED) for name in cls.personal if name in data)
        try:
            event = cls.from_dict(data)
        except (TypeError, ValueError, KeyError) as exc:
            raise SerializationError(
                f"stored {stored.type_name!r} v{stored.schema_version} does not fit "
                f"{cls.__name__} v{cls.version}: {exc}"
            ) from exc
        meta = self.serializer.loads(stored.metadata) if stored.metadata else {}
        meta, meta_erased = open_fields(meta, key, b"m" + aad, self.serializer.loads, where=where)
        if meta_erased and self.encryption is not None:
            for name in self.encryption.metadata:
                if name == "extra":
                    meta.pop("extra", None)
                elif meta.get(name) is not None:
                    meta[name] = ERASED
        return event, self._metadata(meta, stored.recorded_at, erased=meta_erased or erased)

    def published(self, stored: StoredEvent) -> tuple[dict[str, Any], list[str]]:
        """What of a stored event's data may leave the store: ``(data, withheld)``.

        ``data`` is the event's data as stored (not upcast) without anything personal: in a stream the
        codec seals, the sealed box and every field the event's class calls personal (held in clear by
        an event written before its stream was sealed) are left out, and ``withheld`` names them,
        sorted. Other streams' data is whole and nothing is withheld. Needs no key and opens nothing,
        so it answers the same before and after the stream's erasure. The names are the class's
        ``personal``: a class whose personal field had another name in an older schema lists that
        name too. Raises :class:`~eskit.exceptions.UnknownEventType` for an unregistered type in a
        sealed stream (what is personal in it cannot be told) and the serializer's error for data
        that is not an object.
        """
        data = self.serializer.loads(stored.data)
        if not self.seals(stored.stream_id):
            return data, []
        cls = self._classes.get(stored.type_name)
        if cls is None:
            raise UnknownEventType(stored.type_name)
        withheld = {name for name in cls.personal if data.get(name) is not None}
        for name in withheld:
            del data[name]
        box = data.pop(SEALED, None)
        if isinstance(box, dict):
            withheld.update(str(name) for name in box.get("fields", ()))
        return data, sorted(withheld)

    def clear_personal(self, stored: StoredEvent) -> bool:
        """Whether a stored event holds personal fields in clear (written before its stream was sealed)."""
        cls = self._classes.get(stored.type_name)
        data = self.serializer.loads(stored.data)
        if cls is not None and any(data.get(name) is not None for name in cls.personal):
            return True
        meta = self.serializer.loads(stored.metadata) if stored.metadata else {}
        names = self.encryption.metadata if self.encryption is not None else ()
        return any(meta.get(name) for name in names)

    def encode_metadata(self, metadata: EventMetadata) -> bytes:
        """Encode metadata in clear (``recorded_at`` lives in its own column, not here)."""
        return self.serializer.dumps(self._metadata_values(metadata))

    @staticmethod
    def _metadata_values(metadata: EventMetadata) -> dict[str, Any]:
        value: dict[str, Any] = {}
        if metadata.request_id is not None:
            value["request_id"] = metadata.request_id
        if metadata.command is not None:
            value["command"] = metadata.command
        if metadata.causation_id is not None:
            value["causation_id"] = metadata.causation_id
        if metadata.extra:
            value["extra"] = dict(metadata.extra)
        return value

    def decode_metadata(self, data: bytes, recorded_at: datetime) -> EventMetadata:
        """Decode metadata written in clear by :meth:`encode_metadata` (sealed parts need :meth:`decode`)."""
        return self._metadata(self.serializer.loads(data) if data else {}, recorded_at)

    @staticmethod
    def _metadata(value: dict[str, Any], recorded_at: datetime, *, erased: bool = False) -> EventMetadata:
        return EventMetadata(
            recorded_at=recorded_at,
            request_id=value.get("request_id"),
            command=value.get("command"),
            causation_id=value.get("causation_id"),
            extra=value.get("extra") or {},
            erased=erased,
        )


def _aad(stream_id: str, type_name: str, event_id: uuid.UUID) -> bytes:
    """What a sealed box is bound to: its stream, its event's type and id (so it cannot be moved)."""
    return b"\x00".join((stream_id.encode("utf-8"), type_name.encode("utf-8"), event_id.bytes))
