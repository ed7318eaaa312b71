"""One driver session per process: connecting, bounded retries, and driver errors translated."""

from __future__ import annotations

import queue
import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from eskit.budget import remaining
from eskit.exceptions import (
    OperationalError,
    SchemaError,
    StoreUnavailable,
)
from eskit.stores.cassandra.settings import CassandraSettings

if TYPE_CHECKING:
    from eskit.stores.cassandra.statements import Statements

__all__ = ["CassandraSession", "Deadline", "applied", "backoff", "rows_as_named_tuples", "translate", "translated"]

#: the least time a request that needs a global quorum is given, whatever is left of its command's budget
FLOOR = 1.0
#: seconds a statement's preparation waits on one node before it is asked of another as well
PREPARE_HEDGE = 2.0
#: nodes a statement's preparation is asked of, at most (each waits the driver's 10 s at worst)
PREPARE_ATTEMPTS = 3


class Deadline:
    """A time budget for one operation: every request in it waits at most what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    @classmethod
    def for_command(cls, seconds: float) -> Deadline:
        """``seconds``, or what is left of the running command's budget (:mod:`eskit.budget`) when less,
        but never below :data:`FLOOR` (nor above ``seconds``): a request sent with less could not finish
        even when nothing is wrong (a Paxos round between regions takes two round trips), and would
        leave an unknown outcome where waiting a little longer gives a clean answer."""
        left = remaining()
        return cls(seconds if left is None else min(seconds, max(FLOOR, left)))

    def timeout(self, cap: float) -> float:
        """What one request may wait: ``cap`` or what is left, whichever is less (never below 10 ms)."""
        return max(0.01, min(cap, self.remaining()))

    @property
    def passed(self) -> bool:
        return self.remaining() <= 0


_ROW_TYPES: dict[tuple[str, ...], type] = {}


def rows_as_named_tuples(colnames: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The driver's default rows (named tuples, columns named as it names them), with each set of
    columns' class made once: the driver's own factory makes a new class for every response, which
    measured 16% of a command's client CPU."""
    from cassandra.query import named_tuple_factory

    key = tuple(colnames)
    row_type = _ROW_TYPES.get(key)
    if row_type is None:
        if len(_ROW_TYPES) >= 1000:
            _ROW_TYPES.clear()  # statements are prepared once, so a few dozen sets: this only bounds it
        row_type = type(named_tuple_factory(colnames, [tuple(range(len(colnames)))])[0])
        _ROW_TYPES[key] = row_type
    return [row_type(*row) for row in rows]


def applied(result: Any) -> bool:
    """Whether a lightweight transaction (or a batch holding one) applied: the first column of its
    first row (the driver's ``was_applied`` accepts only its own row factories)."""
    row = result.one()
    return row is not None and bool(row[0])


class CassandraSession:
    """One driver cluster and session per process, with prepared statements."""

    def __init__(self, settings: CassandraSettings) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.io.libevreactor import LibevConnection
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        self.settings = settings
        self.cl = getattr(ConsistencyLevel, settings.consistency)
        # Until the keyspace's data centres are known (see choose_levels), the strictest levels.
        self.serial_cl = ConsistencyLevel.SERIAL
        #: plain writes every region must see (durable hints, read models)
        self.write_cl = self.cl
        #: the commit phase of conditional appends
        self.commit_cl = self.cl
        #: the level of the hint written before a proposal when a second, durable one (at
        #: ``write_cl``) goes alongside the Paxos round; None: one hint at ``write_cl``, before
        self.local_hint_cl: Any = None
        self.data_centres: list[str] = []
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.dc)),
            consistency_level=self.cl,
            serial_consistency_level=self.serial_cl,
            request_timeout=settings.request_timeout,
            row_factory=rows_as_named_tuples,
        )
        self.cluster = Cluster(
            list(settings.hosts),
            port=settings.port,
            protocol_version=5,
            connection_class=LibevConnection,
            # Without it, a request sent while another is in flight on the same connection (the
            # durable hint beside an append's Paxos round) waits for the first one's ACK: Nagle's
            # algorithm against the node's delayed ACK, up to 40 ms (measured: 194 ms against 151).
            sockopts=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=settings.connect_timeout,
            control_connection_timeout=settings.connect_timeout,
            # Prepared on the node asked first only: a node that does not know a statement says so when
            # it is sent one, and the driver prepares it there then. Preparing on every node at once
            # would wait for each, a frozen one for the driver's whole timeout per statement.
            prepare_on_all_hosts=False,
        )
        with translated(f"cannot connect to Cassandra at {','.join(settings.hosts)}:{settings.port}"):
            self.session = self.cluster.connect()
        self.statements: Statements | None = None  # prepared once the keyspace is checked

    def prepare(self, cql: str) -> Any:
        """``cql`` prepared (raises driver exceptions: callers translate them).

        The driver asks one node (its round robin picks the next one each time). One that does not
        answer within :data:`PREPARE_HEDGE` seconds (frozen, or behind a dead link) is not waited for
        alone: the same statement is asked of another node too, up to :data:`PREPARE_ATTEMPTS` in all,
        and the first answer wins. A refusal (a syntax error, a missing table) is raised at once.
        """
        from cassandra import OperationTimedOut
        from cassandra.cluster import NoHostAvailable

        answers: queue.SimpleQueue[tuple[Any, BaseException | None]] = queue.SimpleQueue()

        def ask() -> None:
            try:
                answers.put((self.session.prepare(cql), None))
            except BaseException as exc:  # handed to the caller
                answers.put((None, exc))

        asked = waiting = 0
        last: BaseException | None = None
        ask_now = True
        while True:
            if ask_now and asked < PREPARE_ATTEMPTS:
                # Daemon threads: one stuck on a frozen node never holds up the process's exit.
                threading.Thread(target=ask, name="eskit-prepare", daemon=True).start()
                asked, waiting = asked + 1, waiting + 1
            if waiting == 0:
                assert last is not None
                raise last
            try:
                found, error = answers.get(timeout=PREPARE_HEDGE if asked < PREPARE_ATTEMPTS else None)
            except queue.Empty:
                ask_now = True  # no answer in time: ask another node as well
                continue
            waiting -= 1
            if error is None:
                return found
            if not isinstance(error, OperationTimedOut | NoHostAvailable):
                raise error
            last, ask_now = error, waiting == 0

    def query(
        self,
        statement: Any,
        params: Sequence[Any] = (),
        *,
        serial: bool = False,
        idempotent: bool = True,
        deadline: Deadline | None = None,
    ) -> Any:
        """Run a statement with bounded retries (backoff) on timeouts and unavailability.

        Only idempotent statements are retried here; conditional writes handle
        their own retries (see :meth:`CassandraEventStore.append`). With a
        ``deadline``, no attempt waits past it and none starts after it.
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
        cap = self.settings.request_timeout
        for attempt in range(1, attempts + 1):
            try:
                if deadline is None:
                    return self.session.execute(bound)
                return self.session.execute(bound, timeout=deadline.timeout(cap))
            except (ReadTimeout, WriteTimeout, Unavailable, OperationTimedOut, NoHostAvailable) as exc:
                if attempt == attempts or (deadline is not None and deadline.remaining() < 0.05):
                    raise translate(exc, "Cassandra request failed") from exc
                backoff(attempt, deadline)
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


def backoff(attempt: int, deadline: Deadline | None = None) -> None:
    """Sleep before attempt ``attempt + 1``: growing, jittered, and never past ``deadline``."""
    pause = min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0)
    if deadline is not None:
        pause = min(pause, max(0.0, deadline.remaining() - 0.05))
    time.sleep(pause)


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
