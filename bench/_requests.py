"""Count the driver requests of each command, with what each one is: a read, a write, Paxos; local or not.

A request listener on the service's own driver session sees every request the process sends
(``Session.add_request_init_listener``). Each is classified by its statement and consistency
level: a conditional statement or batch is a Paxos round (at the serial level; its commit at the
statement's level), a read at ``SERIAL`` is a serial read (a Paxos prepare), and anything at a
``LOCAL_*`` level stays in the region, while ``QUORUM``, ``SERIAL``, ``ALL`` and ``EACH_QUORUM`` need
replicas of other regions in a keyspace that spans several. Requests sent in the background after
the answer (a snapshot written later) are counted with the command when they start before the
next command does; :func:`count_commands` waits a little after each command for them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CommandCount", "Request", "count_commands", "in_a_row", "markdown", "round_trips", "table"]

#: levels that wait for replicas outside the local data centre (in a keyspace of several)
_GLOBAL = {"QUORUM", "SERIAL", "ALL", "EACH_QUORUM", "TWO", "THREE"}


@dataclass
class Request:
    """One driver request: its kind (``paxos``, ``serial read``, ``read``, ``write``), what and where."""

    kind: str
    table: str
    level: str
    crosses: bool
    started: float = 0.0  # time.monotonic() when sent
    ended: float = 0.0  # when its answer came (0: not yet)

    def describe(self) -> str:
        return f"{self.kind} {self.table} {self.level}" + (" (cross-region)" if self.crosses else "")

    @property
    def round_trips(self) -> list[str]:
        """The cross-region round trips this request waits for, named (Paxos v2: prepare, propose, commit)."""
        if not self.crosses:
            return []
        if self.kind == "paxos":
            names = ["Paxos prepare+read", "Paxos propose"]
            return names + (["Paxos commit"] if not self.level.endswith(("LOCAL_QUORUM", "LOCAL_ONE")) else [])
        return [f"{self.kind} {self.table} {self.level}"]


def in_a_row(requests: list[Request]) -> int:
    """How many requests the command waited for one after the other (requests sent side by side count once)."""
    groups = 0
    end = -1.0
    for request in sorted(requests, key=lambda r: r.started):
        if request.started >= end:
            groups += 1
            end = request.ended or request.started
        else:
            end = max(end, request.ended or request.started)
    return groups


def round_trips(requests: list[Request]) -> tuple[int, str]:
    """How many cross-region round trips a command waits for in a row, and which.

    Requests whose times overlap ran alongside each other: a group of them costs its longest.
    """
    groups: list[list[Request]] = []
    for request in sorted((r for r in requests if r.crosses), key=lambda r: r.started):
        if groups and request.started < max(r.ended or request.started for r in groups[-1]):
            groups[-1].append(request)
        else:
            groups.append([request])
    total, names = 0, []
    for group in groups:
        longest = max(group, key=lambda r: len(r.round_trips))
        total += len(longest.round_trips)
        others = [" + ".join(r.round_trips) for r in group if r is not longest]
        names.append(" → ".join(longest.round_trips) + "".join(f" (alongside: {o})" for o in others))
    return total, " → ".join(names)


@dataclass
class CommandCount:
    """The requests one command made, in the order they were sent."""

    name: str
    requests: list[Request] = field(default_factory=list)
    answered: float = 0.0  # time.monotonic() when the command returned

    @property
    def on_path(self) -> list[Request]:
        """The requests sent before the command answered (the rest ran after, in the background)."""
        return [r for r in self.requests if r.started <= self.answered]

    def count(self, kind: str | None = None, *, crosses: bool | None = None) -> int:
        return sum(
            1 for r in self.requests if (kind is None or r.kind == kind) and (crosses is None or r.crosses == crosses)
        )


def _level(value: Any, default: str) -> str:
    from cassandra import ConsistencyLevel

    return default if value is None else str(ConsistencyLevel.value_to_name[value])


def _text(statement: Any) -> str:
    prepared = getattr(statement, "prepared_statement", None)
    if prepared is not None:
        return str(prepared.query_string)
    return str(getattr(statement, "query_string", statement))


def _table(text: str) -> str:
    words = text.replace("(", " ").split()
    for keyword in ("FROM", "INTO", "UPDATE"):
        if keyword in words:
            name = words[words.index(keyword) + 1]
            return name.rsplit(".", 1)[-1]
    return "?"


def classify(statement: Any, default_level: str, prepared: Any = None) -> Request:
    """What one statement (or batch) sent through the driver is (``prepared``: the cluster's statements by id)."""
    from cassandra.query import BatchStatement

    if isinstance(statement, BatchStatement):
        texts = []
        for is_prepared, inner, _ in getattr(statement, "_statements_and_parameters", []):
            known = prepared.get(inner) if is_prepared and prepared is not None else None
            texts.append(str(known.query_string) if known is not None else str(inner))
        text = next((t for t in texts if " IF " in t), texts[0] if texts else "")
    else:
        text = _text(statement)
    level = _level(getattr(statement, "consistency_level", None), default_level)
    serial = _level(getattr(statement, "serial_consistency_level", None), "SERIAL")
    if " IF " in text or " IF NOT EXISTS" in text:
        return Request("paxos", _table(text), f"{serial}+commit {level}", serial == "SERIAL" or level in _GLOBAL)
    if level in ("SERIAL", "LOCAL_SERIAL"):
        return Request("serial read", _table(text), level, level == "SERIAL")
    kind = "read" if text.lstrip().upper().startswith("SELECT") else "write"
    return Request(kind, _table(text), level, level in _GLOBAL)


class RequestLog:
    """Every request a driver session sends from now on (thread-safe)."""

    def __init__(self, session: Any, default_level: str) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._default = default_level
        session.add_request_init_listener(self._seen)
        self._session = session

    def _seen(self, future: Any) -> None:
        try:
            request = classify(future.query, self._default, self._session.cluster._prepared_statements)
        except Exception as exc:  # never let counting break a request
            request = Request(f"unclassified ({type(exc).__name__})", "?", "?", True)
        request.started = time.monotonic()

        def done(_: Any, request: Request = request) -> None:
            request.ended = time.monotonic()

        future.add_callbacks(done, done)
        with self._lock:
            self.requests.append(request)

    def take(self) -> list[Request]:
        with self._lock:
            taken, self.requests = self.requests, []
        return taken

    def close(self) -> None:
        self._session.remove_request_init_listener(self._seen)


def count_commands(url: str, *, settle: float = 0.3) -> list[CommandCount]:
    """Run one of each command on a fresh account of the store at ``url`` and count their requests.

    The service is the one ``bootstrap`` builds (command cache on). ``settle`` seconds pass after each
    command so that requests it left running in the background are counted with it.
    """
    from downloads.application import (
        AcquireLicense,
        OpenAccount,
        RegisterDevice,
        ReleaseLicense,
        RenewLicense,
        StartPlayback,
        SyncDevice,
    )
    from downloads.bootstrap import bootstrap
    from downloads.domain import DomainError
    from downloads.settings import Settings
    from tests.support.cassandra import MASTER_KEY

    # Titles stay cached for the whole count (in service they are read again in the background,
    # once a second while in use, off the commands' path).
    settings = Settings(store=url, title_cache_seconds=60, master_key=MASTER_KEY)  # Cassandra: production mode
    runtime = bootstrap(settings)
    service = runtime.service
    db = runtime.stores.events.db  # type: ignore[attr-defined]
    log = RequestLog(db.session, _level(db.cl, "LOCAL_QUORUM"))
    counts: list[CommandCount] = []
    account = f"count-{uuid.uuid4().hex[:8]}"

    def measure(name: str, call: Callable[[], Any], before: Callable[[], Any] | None = None) -> Any:
        if before is not None:
            before()
            time.sleep(settle)
        log.take()
        try:
            result = call()
        except DomainError as exc:
            result = exc
        answered = time.monotonic()
        time.sleep(settle)
        counts.append(CommandCount(name, log.take(), answered))
        return result

    try:
        # The process has used the title before (commands find it in the catalog cache).
        warm = f"{account}-warm"
        service.handle(OpenAccount(warm, "basic"))
        service.handle(RegisterDevice(warm, "d1", "phone"))
        service.handle(AcquireLicense(warm, "d1", "demo-title-1"))
        measure("open account", lambda: service.handle(OpenAccount(account, "basic")))
        measure("register device", lambda: service.handle(RegisterDevice(account, "d1", "phone")))
        service.handle(RegisterDevice(account, "d2", "phone"))
        acquired = measure("acquire, accepted", lambda: service.handle(AcquireLicense(account, "d1", "demo-title-1")))
        license_id = acquired.body["license_id"]
        denied = measure(
            "acquire, denied (device limit)", lambda: service.handle(AcquireLicense(account, "d2", "demo-title-1"))
        )
        assert isinstance(denied, DomainError), denied
        measure("play", lambda: service.handle(StartPlayback(account, license_id)))
        measure("renew", lambda: service.handle(RenewLicense(account, license_id)))
        measure("sync", lambda: service.handle(SyncDevice(account, "d1", (license_id,))))
        measure("release", lambda: service.handle(ReleaseLicense(account, license_id)))
        measure("release, denied (no such license)", lambda: service.handle(ReleaseLicense(account, "nope")))
        key, again = f"k-{uuid.uuid4().hex}", AcquireLicense(account, "d1", "demo-title-1")
        measure(
            "acquire, sent again with its key (replayed)",
            lambda: service.handle(again, idempotency_key=key),
            before=lambda: service.handle(again, idempotency_key=key),
        )
    finally:
        log.close()
        runtime.close()
    # A second process: nothing cached, so the first command loads the account.
    runtime = bootstrap(settings)
    log = RequestLog(runtime.stores.events.db.session, _level(db.cl, "LOCAL_QUORUM"))  # type: ignore[attr-defined]
    try:
        log.take()
        runtime.service.handle(AcquireLicense(account, "d1", "demo-title-2"))
        answered = time.monotonic()
        time.sleep(settle)
        counts.insert(3, CommandCount("acquire, accepted, account and title not cached", log.take(), answered))
    finally:
        log.close()
        runtime.close()
    return counts


def table(counts: list[CommandCount]) -> list[dict[str, Any]]:
    """Rows for a report: per command, requests in all, Paxos rounds, serial reads, reads, writes, cross-region."""
    rows = []
    for c in counts:
        path = CommandCount(c.name, c.on_path)
        rows.append(
            {
                "command": c.name,
                "requests": len(path.requests),
                "in a row": in_a_row(path.requests),
                "paxos": path.count("paxos"),
                "serial reads": path.count("serial read"),
                "reads": path.count("read"),
                "writes": path.count("write"),
                "cross-region": path.count(crosses=True),
                "round trips": round_trips(path.requests)[0],
                "which": round_trips(path.requests)[1],
                "after the answer": len(c.requests) - len(path.requests),
                "sent": "; ".join(r.describe() for r in c.requests),
            }
        )
    return rows


def markdown(counts: list[CommandCount]) -> str:
    """The table as Markdown."""
    rows = table(counts)
    head = [
        "command",
        "requests",
        "in a row",
        "paxos",
        "serial reads",
        "reads",
        "writes",
        "cross-region",
        "round trips",
        "which",
        "after the answer",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(row[h]) for h in head) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bench._requests URL: print the table and what each command sent
    import sys

    found = count_commands(sys.argv[1])
    print(markdown(found))
    for c in found:
        print(
            f"\n{c.name}:\n  "
            + "\n  ".join(r.describe() + ("" if r.started <= c.answered else " (after the answer)") for r in c.requests)
        )
