"""Timestamps as stores keep them: integer microseconds since the epoch, UTC.

Every store can encode any time from ``0001-01-01T00:00:00Z`` to
``9999-12-31T23:59:59.999999Z`` (:data:`EARLIEST`, :data:`LATEST`): what a
Python ``datetime`` holds once it is in UTC. A time zone can put a datetime past
either end once converted (``9999-12-31T23:59:59.999999-14:00`` is in year 10000
in UTC); :func:`storable` refuses it, and :func:`from_micros` refuses a stored
value outside the range (only a damaged or forged row holds one).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["EARLIEST", "LATEST", "from_micros", "storable", "to_micros"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def to_micros(when: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime for microseconds since the epoch.

    Raises :class:`OverflowError` for a value outside :data:`EARLIEST` .. :data:`LATEST`.
    """
    return _EPOCH + timedelta(microseconds=micros)


def storable(when: datetime) -> datetime:
    """``when`` in UTC, if every store can keep it and read it back; else :class:`ValueError` saying why.

    A naive datetime is refused: its moment depends on whoever reads it.
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{when.isoformat()} has no time zone")
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{when.isoformat()} is outside the times stores encode ({EARLIEST.isoformat()} to {LATEST.isoformat()})"
        ) from None
