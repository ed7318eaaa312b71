"""One driver session per process: connecting, bounded retries, and driver errors translated."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from eskit.exceptions import (
    OperationalError,
    SchemaError,
    StoreUnavailable,
)
from eskit.stores.cassandra.settings import CassandraSettings

if TYPE_CHECKING:
    from eskit.stores.cassandra.statements import Statements

__all__ = ["CassandraSession", "backoff", "translate", "translated"]


class CassandraSession:
    """One driver cluster and session per process, with prepared statements."""

    def __init__(self, settings: CassandraSettings) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.io.libevreactor import LibevConnection
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        self.settings = settings
        self.cl = getattr(ConsistencyLevel, settings.consistency)
        # Until the keyspace's data centres are known (see _choose_levels), the strictest levels.
        self.serial_cl = ConsistencyLevel.SERIAL
        self.write_cl = self.cl
        self.data_centres: list[str] = []
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.dc)),
            consistency_level=self.cl,
            serial_consistency_level=self.serial_cl,
            request_timeout=settings.request_timeout,
        )
        self.cluster = Cluster(
            list(settings.hosts),
            port=settings.port,
            protocol_version=5,
            connection_class=LibevConnection,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=settings.connect_timeout,
            control_connection_timeout=settings.connect_timeout,
        )
        with translated(f"cannot connect to Cassandra at {','.join(settings.hosts)}:{settings.port}"):
            self.session = self.cluster.connect()
        self.statements: Statements | None = None  # prepared once the keyspace is checked

    def query(
        self, statement: Any, params: Sequence[Any] = (), *, serial: bool = False, idempotent: bool = True
    ) -> Any:
        """Run a statement with bounded retries (backoff) on timeouts and unavailability.

        Only idempotent statements are retried here; conditional writes handle
        their own retries (see :meth:`CassandraEventStore.append`).
        """
        from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
        from cassandra.cluster import NoHostAvailable
        from cassandra.query import BoundStatement

        if isinstance(statement, BoundStatement):
            bound = statement  # bound already, with its own levels
        else:
            bound = statement.bind(params) if hasattr(statement, "bind") else statement
        if serial:
            bound.consistency_level = self.serial_cl
        attempts = self.settings.retries + 1 if idempotent else 1
        for attempt in range(1, attempts + 1):
            try:
                return self.session.execute(bound)
            except (ReadTimeout, WriteTimeout, Unavailable, OperationTimedOut, NoHostAvailable) as exc:
                if attempt == attempts:
                    raise translate(exc, "Cassandra request failed") from exc
                backoff(attempt)
            except Exception as exc:
                raise translate(exc, "Cassandra request failed") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def query_all(self, queries: Sequence[tuple[Any, Sequence[Any]]]) -> list[Any]:
        """Run idempotent reads concurrently; any that fails is run again through :meth:`query`."""
        futures = [self.session.execute_async(statement.bind(params)) for statement, params in queries]
        results: list[Any] = []
        for future, (statement, params) in zip(futures, queries, strict=True):
            try:
                results.append(future.result())
            except Exception:  # retried with backoff (and translated) by query
                results.append(self.query(statement, params))
        return results

    def close(self) -> None:
        self.cluster.shutdown()


def backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))


def translate(exc: Exception, context: str) -> Exception:
    """Map a driver exception onto the eskit hierarchy."""
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable
    from cassandra.protocol import ConfigurationException, InvalidRequest, SyntaxException

    if isinstance(exc, NoHostAvailable):
        return StoreUnavailable(f"{context}: no Cassandra node could be reached ({exc})")
    if isinstance(exc, ReadTimeout | WriteTimeout | Unavailable | OperationTimedOut):
        return OperationalError(f"{context}: {type(exc).__name__}: {exc}")
    if isinstance(exc, InvalidRequest | ConfigurationException | SyntaxException):
        return SchemaError(f"{context}: {exc}")
    return OperationalError(f"{context}: {type(exc).__name__}: {exc}")


@contextmanager
def translated(context: str) -> Iterator[None]:
    """Driver exceptions raised inside become eskit exceptions."""
    from eskit.exceptions import EskitError

    try:
        yield
    except EskitError:
        raise
    except Exception as exc:
        raise translate(exc, context) from exc
