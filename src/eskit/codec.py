"""Encoding events and snapshots: a serializer port, a type registry, upcasters.

* :class:`Serializer` turns a JSON-like dict into bytes and back; the default
  :class:`OrjsonSerializer` uses orjson.
* :class:`Upcasters` holds pure functions ``dict -> dict`` that bring a stored
  payload from schema version *n* to *n + 1*; on read, the chain from the stored
  version to the current one is applied. Rows are never rewritten.
* :class:`EventCodec` maps stable type names to event classes and turns
  ``(DomainEvent, EventMetadata)`` into a :class:`~eskit.events.NewEvent` and
  a :class:`~eskit.events.StoredEvent` back into both.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from eskit.events import DomainEvent, EventMetadata, NewEvent, StoredEvent
from eskit.exceptions import SerializationError, UnknownEventType, UpcastError

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
    ) -> None:
        self.serializer = serializer or OrjsonSerializer()
        self.upcasters = upcasters or Upcasters()
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

    def encode(self, event: DomainEvent, metadata: EventMetadata) -> NewEvent:
        """Encode an event and its metadata for appending."""
        cls = type(event)
        if self._classes.get(cls.type_name) is not cls:
            raise UnknownEventType(cls.type_name or cls.__name__)
        return NewEvent(
            type_name=cls.type_name,
            schema_version=cls.version,
            data=self.serializer.dumps(event.to_dict()),
            metadata=self.encode_metadata(metadata),
            recorded_at=metadata.recorded_at,
        )

    def decode(self, stored: StoredEvent) -> tuple[DomainEvent, EventMetadata]:
        """Decode a stored event, upcasting its payload to the class's current version."""
        cls = self._classes.get(stored.type_name)
        if cls is None:
            raise UnknownEventType(stored.type_name)
        data = self.serializer.loads(stored.data)
        if stored.schema_version != cls.version:
            data = self.upcasters.upcast(stored.type_name, data, stored.schema_version, cls.version)
        try:
            event = cls.from_dict(data)
        except (TypeError, ValueError, KeyError) as exc:
            raise SerializationError(
                f"stored {stored.type_name!r} v{stored.schema_version} does not fit "
                f"{cls.__name__} v{cls.version}: {exc}"
            ) from exc
        return event, self.decode_metadata(stored.metadata, stored.recorded_at)

    def encode_metadata(self, metadata: EventMetadata) -> bytes:
        """Encode metadata; ``recorded_at`` lives in its own column, not here."""
        value: dict[str, Any] = {}
        if metadata.request_id is not None:
            value["request_id"] = metadata.request_id
        if metadata.command is not None:
            value["command"] = metadata.command
        if metadata.causation_id is not None:
            value["causation_id"] = metadata.causation_id
        if metadata.extra:
            value["extra"] = dict(metadata.extra)
        return self.serializer.dumps(value)

    def decode_metadata(self, data: bytes, recorded_at: datetime) -> EventMetadata:
        """Decode metadata written by :meth:`encode_metadata`."""
        value = self.serializer.loads(data) if data else {}
        return EventMetadata(
            recorded_at=recorded_at,
            request_id=value.get("request_id"),
            command=value.get("command"),
            causation_id=value.get("causation_id"),
            extra=value.get("extra") or {},
        )
