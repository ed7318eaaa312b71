"""eskit's errors as the ``eventsourcing`` library names them, at the module's boundary.

The library's recorders raise its PEP 249 classes; an application built on it catches
:class:`eventsourcing.persistence.IntegrityError` to learn that an aggregate moved on.
Every call into an eskit store from this module goes through :func:`translated`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from eventsourcing import persistence as es

from eskit.exceptions import (
    ConcurrencyError,
    DamagedEvent,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SchemaError,
    StoreError,
)

__all__ = ["translated"]


@contextmanager
def translated() -> Iterator[None]:
    """Raise eskit's store errors as the library's: a stale version is its ``IntegrityError``.

    ``ConcurrencyError`` and any other refused write become ``IntegrityError``; a stored event
    that cannot be read back ``DataError``; misuse ``InterfaceError``; a failing or unreachable
    backend (an unknown outcome included) ``OperationalError``; a missing or foreign schema
    ``ProgrammingError``. The eskit error is kept as the cause.
    """
    try:
        yield
    except ConcurrencyError as exc:
        raise es.IntegrityError(str(exc)) from exc
    except DamagedEvent as exc:
        raise es.DataError(str(exc)) from exc
    except IntegrityError as exc:
        raise es.IntegrityError(str(exc)) from exc
    except InterfaceError as exc:
        raise es.InterfaceError(str(exc)) from exc
    except OperationalError as exc:
        raise es.OperationalError(str(exc)) from exc
    except SchemaError as exc:
        raise es.ProgrammingError(str(exc)) from exc
    except StoreError as exc:
        raise es.DatabaseError(str(exc)) from exc
