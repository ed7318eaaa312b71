"""What a ``cassandra://`` URL can say: hosts, keyspace, consistency levels, replication, timeouts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from eskit.exceptions import (
    InterfaceError,
)

__all__ = ["CassandraSettings", "parse_replication"]


_CONSISTENCY_NAMES = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE")
_SERIAL_NAMES = ("SERIAL", "LOCAL_SERIAL")


def parse_replication(text: str) -> dict[str, int] | int:
    """``3`` (that many replicas in the local data centre) or ``dc1:3,dc2:3`` (per data centre)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    factors: dict[str, int] = {}
    for item in text.split(","):
        name, sep, count = item.strip().partition(":")
        if not sep or not name or not count.strip().isdigit() or not name.replace("_", "a").replace("-", "a").isalnum():
            raise InterfaceError(f"bad replication {text!r}: use a number or dc1:3,dc2:3")
        factors[name] = int(count)
    return factors


@dataclass(frozen=True)
class CassandraSettings:
    """Everything a ``cassandra://`` URL can say, with the defaults.

    ``cassandra://host1,host2[:port]/keyspace?dc=dc1&consistency=LOCAL_QUORUM
    &serial_consistency=SERIAL&write_consistency=QUORUM&commit_consistency=LOCAL_QUORUM
    &single_writer_region=false&replication=dc1:3,dc2:3&bucket_size=10000&create_schema=false
    &connect_timeout=10&request_timeout=12&retries=5&command_timeout=5``

    Regions: when the keyspace is replicated to more than one data centre,
    conditional appends run their Paxos round at ``SERIAL`` (a global quorum), so
    two regions can never both win the same version, and commit at
    ``commit_consistency`` (``LOCAL_QUORUM``: with Paxos v2 an append is durable
    once a global quorum accepted it, see ``docs/cassandra.md``); ``LOCAL_SERIAL``
    is refused there unless ``single_writer_region=true`` declares that only one
    region ever accepts commands. ``command_timeout`` bounds the time a command
    may take in all (its wait for its aggregate's turn, its conflict retries, its
    appends with their retries and the resolution of an unknown outcome; see
    :mod:`eskit.budget`), and so how long a region cut off from the others takes to refuse.
    """

    hosts: tuple[str, ...]
    keyspace: str
    port: int = 9042
    dc: str | None = None  # local data centre; None: the driver picks the first it sees
    consistency: str = "LOCAL_QUORUM"  # reads
    # The Paxos phase of conditional writes; None: SERIAL on a multi-DC keyspace, else LOCAL_SERIAL.
    serial_consistency: str | None = None
    # Plain writes every region must see (the feed's durable hints, read models); None: QUORUM on a
    # multi-DC keyspace with several writing regions, else the read consistency.
    write_consistency: str | None = None
    # The commit of conditional appends (Paxos's last phase); None: the read consistency.
    commit_consistency: str | None = None
    single_writer_region: bool = False  # only one region accepts commands (allows LOCAL_SERIAL on many DCs)
    # Used only when creating the keyspace: replicas in the local DC, or per DC ("dc1:3,dc2:3").
    replication: int | dict[str, int] = 3
    bucket_size: int = 10_000  # positions per partition; fixed for a keyspace once created
    create_schema: bool = False  # dev and tests only: create keyspace and tables if missing
    connect_timeout: float = 10.0
    request_timeout: float = 12.0
    retries: int = 5  # bounded retries (with backoff) on timeouts and unavailable replicas
    command_timeout: float = 5.0  # seconds a command may take in all: turn, retries, resolution

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> CassandraSettings:
        """Parse a ``cassandra://`` URL; raise :class:`InterfaceError` naming what is wrong."""
        parts = urlsplit(url)
        if parts.scheme != "cassandra":
            raise InterfaceError(f"not a Cassandra URL: {url!r}")
        netloc = parts.netloc.rsplit("@", 1)[-1]
        port = 9042
        hosts: list[str] = []
        for item in netloc.split(","):
            host, _, host_port = item.partition(":")
            if host_port:
                if not host_port.isdigit():
                    raise InterfaceError(f"bad port {host_port!r} in {url!r}")
                port = int(host_port)
            if host:
                hosts.append(host)
        keyspace = parts.path.strip("/")
        if not hosts:
            raise InterfaceError(f"no hosts in {url!r}: use cassandra://host1,host2[:port]/keyspace")
        if not keyspace or not keyspace.replace("_", "a").isalnum() or len(keyspace) > 48:
            raise InterfaceError(f"bad keyspace {keyspace!r} in {url!r}: letters, digits and _ only")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        known = {
            "dc",
            "consistency",
            "serial_consistency",
            "write_consistency",
            "commit_consistency",
            "single_writer_region",
            "replication",
            "bucket_size",
            "create_schema",
            "connect_timeout",
            "request_timeout",
            "retries",
            "command_timeout",
        }
        for key in query:
            if key not in known:
                raise InterfaceError(f"unknown option {key!r} in {url!r} (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {"hosts": tuple(hosts), "keyspace": keyspace, "port": port}
        try:
            if "dc" in query:
                values["dc"] = query["dc"]
            for key in ("consistency", "serial_consistency", "write_consistency", "commit_consistency"):
                if key in query:
                    values[key] = query[key].upper()
            if "replication" in query:
                values["replication"] = parse_replication(query["replication"])
            for key in ("bucket_size", "retries"):
                if key in query:
                    values[key] = int(query[key])
            for key in ("connect_timeout", "request_timeout", "command_timeout"):
                if key in query:
                    values[key] = float(query[key])
            for key in ("create_schema", "single_writer_region"):
                if key in query:
                    values[key] = query[key].lower() in ("1", "true", "yes")
        except ValueError as exc:
            raise InterfaceError(f"bad option value in {url!r}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        for name in ("consistency", "write_consistency", "commit_consistency"):
            value = getattr(settings, name)
            if value is not None and value not in _CONSISTENCY_NAMES:
                raise InterfaceError(f"{name} must be one of {', '.join(_CONSISTENCY_NAMES)}")
        for name in ("connect_timeout", "request_timeout", "command_timeout"):
            if not 0 < getattr(settings, name) <= 600:
                raise InterfaceError(f"{name} must be more than 0 and at most 600 seconds")
        if settings.serial_consistency is not None and settings.serial_consistency not in _SERIAL_NAMES:
            raise InterfaceError("serial_consistency must be SERIAL or LOCAL_SERIAL")
        if settings.bucket_size < 10:
            raise InterfaceError("bucket_size must be at least 10")
        factors = settings.replication.values() if isinstance(settings.replication, dict) else [settings.replication]
        if min(factors) < 1:
            raise InterfaceError("replication must be at least 1 in every data centre")
        return settings

    def replication_map(self, local_dc: str) -> dict[str, int]:
        """Replicas per data centre for a new keyspace."""
        if isinstance(self.replication, dict):
            return dict(self.replication)
        return {local_dc: self.replication}
