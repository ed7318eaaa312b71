"""Personal fields sealed with each stream's key: what the store keeps, what reads give back, and erasure.

Runs on the in-memory stores and on SQLite (whose file is searched byte by byte).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import pytest

from eskit import (
    ERASED,
    Aggregate,
    CommandRunner,
    DomainEvent,
    EventCodec,
    EventMetadata,
    KeyErased,
    MasterKeyError,
    Repository,
    SerializationError,
    SnapshotPolicy,
    Stores,
    Upcasters,
    is_erased,
    open_stores,
)
from eskit.events import Snapshot
from eskit.privacy import ERASED_KEY, Encryption, KeyRecord, KeyRing, KeyStore, MasterKey, MasterKeys
from eskit.stores.memory import InMemorySnapshotStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
META = EventMetadata(recorded_at=T0, request_id="key-of-ann-7", command="join", extra={"args": {"who": "ann"}})


@dataclass(frozen=True)
class Joined(DomainEvent):
    type_name = "test.Joined"
    personal = frozenset({"phone"})

    phone: str
    seats: int


@dataclass(frozen=True)
class Left(DomainEvent):
    type_name = "test.Left"


class Member(Aggregate):
    snapshot_type = "test.Member"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.phones: list[str] = []

    def join(self, phone: str) -> None:
        self.trigger(Joined(phone, 1))

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, Joined):
            self.phones.append(event.phone)

    def to_snapshot(self) -> Mapping[str, Any]:
        return {"phones": self.phones}

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: Mapping[str, Any]) -> Self:
        member = cls(aggregate_id)
        member.version, member.phones = version, list(state["phones"])
        return member


class CountingKeys(KeyStore):
    """A key store that counts reads (a real one underneath)."""

    def __init__(self, inner: KeyStore) -> None:
        self.inner, self.reads = inner, 0

    def get(self, subject: str) -> KeyRecord | None:
        self.reads += 1
        return self.inner.get(subject)

    def create(self, record: KeyRecord) -> KeyRecord:
        return self.inner.create(record)

    def erase(self, subject: str, at: datetime) -> KeyRecord:
        return self.inner.erase(subject, at)

    def rewrap(self, old: KeyRecord, master_id: str, wrapped: bytes) -> bool:
        return self.inner.rewrap(old, master_id, wrapped)

    def scan(self, *, after: str | None = None, limit: int = 1000) -> list[KeyRecord]:
        return self.inner.scan(after=after, limit=limit)

    def load(self, records: Sequence[KeyRecord]) -> int:
        return self.inner.load(records)


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'members.db'}"
    opened = open_stores(url)
    yield opened
    opened.close()


def codec(*, upcasters: Upcasters | None = None) -> EventCodec:
    return EventCodec([Joined, Left], upcasters=upcasters, encryption=Encryption(("member-",)))


def repository(stores: Stores, *, masters: MasterKeys | None = None, every: int = 0) -> Repository[Member]:
    assert stores.keys is not None
    ring = KeyRing(CountingKeys(stores.keys), masters or MasterKeys(MasterKey.generate()))
    return Repository(
        Member,
        stores.events,
        codec(),
        snapshots=stores.snapshots,
        snapshot_policy=SnapshotPolicy(every=every),
        stream_prefix="member-",
        keys=ring,
    )


def join(repo: Repository[Member], member_id: str, phone: str, *, meta: EventMetadata = META) -> None:
    try:
        member = repo.load(member_id)
    except Exception:
        member = Member(member_id)
    member.join(phone)
    repo.save(member, meta)


def test_personal_fields_and_metadata_are_stored_sealed_and_read_back_whole(stores: Stores) -> None:
    repo = repository(stores)
    join(repo, "m1", "+44 7700 900123")
    [stored] = stores.events.read("member-m1")
    raw = stored.data + stored.metadata
    assert b"7700" not in raw and b"key-of-ann" not in raw and b"ann" not in raw
    assert b'"seats":1' in stored.data and b'"command":"join"' in stored.metadata  # what is not personal stays clear
    [recorded] = repo.history("m1")
    assert recorded.event == Joined("+44 7700 900123", 1)
    assert recorded.metadata == META


def test_once_the_key_is_erased_personal_fields_read_as_erased_and_the_rest_as_it_was(stores: Stores) -> None:
    repo = repository(stores, every=1)
    join(repo, "m1", "+44 7700 900123")
    assert stores.snapshots.versions("member-m1") == [1]
    repo.forget("m1", at=T0)
    assert stores.snapshots.versions("member-m1") == []
    [recorded] = repo.history("m1")
    assert recorded.event == Joined(ERASED, 1) and is_erased(recorded.event.phone)  # type: ignore[attr-defined]
    assert recorded.metadata.erased and is_erased(recorded.metadata.request_id)
    assert recorded.metadata.extra == {} and recorded.metadata.command == "join"
    member = repo.load("m1")
    assert member.key_erased and member.phones == [ERASED]


def test_nothing_personal_is_written_to_a_stream_whose_key_was_erased(stores: Stores) -> None:
    repo = repository(stores)
    join(repo, "m1", "+44 7700 900123")
    repo.forget("m1", at=T0)
    member = repo.load("m1")
    member.join("+44 7700 900999")
    with pytest.raises(KeyErased):
        repo.save(member, META)
    member = repo.load("m1")
    member.trigger(Left())
    repo.save(member, EventMetadata(recorded_at=T0, command="leave"))  # nothing personal: written in clear
    assert [r.type_name for r in repo.history("m1")] == ["test.Joined", "test.Left"]


def test_a_writer_that_loaded_before_the_erasure_writes_only_what_no_one_can_read(stores: Stores) -> None:
    """Forgetting fences no writer: an application records the erasure as an event first, so such a
    writer's append conflicts (the service does); without one, what it writes is sealed for good."""
    repo = repository(stores)
    join(repo, "m1", "+44 7700 900123")
    stale = repo.load("m1")
    repo.forget("m1", at=T0)
    stale.join("+44 7700 900999")
    repo.save(stale, META)
    assert [r.event for r in repo.history("m1")] == [Joined(ERASED, 1), Joined(ERASED, 1)]
    assert b"900999" not in stores.events.read("member-m1")[1].data


def test_a_key_is_read_once_per_load_and_never_by_the_commands_of_a_cached_aggregate(stores: Stores) -> None:
    repo = repository(stores)
    runner = CommandRunner(repo, cache_size=10)
    keys = repo.keys.store  # type: ignore[union-attr]
    assert isinstance(keys, CountingKeys)
    for n in range(20):
        runner.run("m1", lambda member, n=n: member.join(f"phone-{n}"), metadata=META, create=True)
    assert keys.reads == 2  # the first load finds no stream, the first save makes the key
    repo.load("m1")
    assert keys.reads == 3


def test_a_sealed_box_opens_only_in_its_own_event(stores: Stores) -> None:
    repo = repository(stores)
    join(repo, "m1", "a")
    join(repo, "m2", "b")
    [first] = stores.events.read("member-m1")
    [second] = stores.events.read("member-m2")
    moved = type(first)(**{**first.__dict__, "data": second.data})
    with pytest.raises(SerializationError, match="does not open"):
        repo.decode(moved)
    with pytest.raises(SerializationError, match="does not hold"):
        codec().decode(first)  # no key given


def test_events_written_in_clear_before_sealing_read_as_erased_once_the_stream_is_erased(stores: Stores) -> None:
    plain = EventCodec([Joined, Left])  # the code before encryption
    stores.events.append("member-m1", [plain.encode(Joined("+44 1", 2), META)], expected_version=0)
    repo = repository(stores)
    assert repo.history("m1")[0].event == Joined("+44 1", 2)  # readable, as it always was
    join(repo, "m1", "+44 2")  # the stream's first sealed event makes its key
    assert b"+44 2" not in stores.events.read("member-m1")[1].data
    repo.forget("m1", at=T0)
    assert [r.event for r in repo.history("m1")] == [Joined(ERASED, 2), Joined(ERASED, 1)]
    assert stores.events.read("member-m1")[0].data.count(b"+44 1") == 1  # history is never rewritten


def test_what_may_leave_the_store_holds_nothing_personal_sealed_or_in_clear_before_and_after_erasure(
    stores: Stores,
) -> None:
    plain = EventCodec([Joined, Left])  # the code before encryption
    stores.events.append("member-m1", [plain.encode(Joined("+44 1", 2), META)], expected_version=0)
    repo = repository(stores)
    join(repo, "m1", "+44 2")
    sealing = codec()

    def published() -> list[tuple[dict[str, Any], list[str]]]:
        return [sealing.published(stored) for stored in stores.events.read("member-m1")]

    before = published()
    assert before == [({"seats": 2}, ["phone"]), ({"seats": 1}, ["phone"])]
    repo.forget("m1", at=T0)
    assert published() == before  # opens nothing: the same after the erasure
    stores.events.append("other-1", [sealing.encode(Joined("+44 3", 4), META, stream_id="other-1")], expected_version=0)
    assert sealing.published(stores.events.read("other-1")[0]) == ({"phone": "+44 3", "seats": 4}, [])  # not sealed


def test_upcasters_see_the_opened_payload(stores: Stores) -> None:
    @dataclass(frozen=True)
    class JoinedV2(DomainEvent):
        type_name = "test.Joined"
        version = 2
        personal = frozenset({"phone"})
        phone: str
        seats: int
        country: str

    repo = repository(stores)
    join(repo, "m1", "+44 7700")
    upcasters = Upcasters()
    upcasters.register("test.Joined", 1, lambda data: {**data, "country": data["phone"][:3]})
    newer = EventCodec([JoinedV2], upcasters=upcasters, encryption=Encryption(("member-",)))
    [stored] = stores.events.read("member-m1")
    event, _ = newer.decode(stored, key=repo.stream_key("member-m1"))
    assert event == JoinedV2("+44 7700", 1, "+44")
    event, _ = newer.decode(stored, key=ERASED_KEY)
    assert isinstance(event, JoinedV2) and is_erased(event.phone)


def test_snapshots_are_sealed_whole_and_never_used_once_the_key_is_erased(stores: Stores) -> None:
    repo = repository(stores, every=2)
    join(repo, "m1", "+44 7700 900123")
    join(repo, "m1", "+44 7700 900456")
    assert stores.snapshots.versions("member-m1") == [2]
    snapshot = stores.snapshots.load("member-m1")
    assert snapshot is not None and b"7700" not in snapshot.state
    loaded = repo.load("m1")
    assert loaded.snapshot_taken == (2, len(snapshot.state)) and loaded.phones[1] == "+44 7700 900456"


def test_a_rotated_master_key_still_opens_every_key_and_rewraps_them(stores: Stores) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    join(repository(stores, masters=MasterKeys(old)), "m1", "+44 1")
    rotating = repository(stores, masters=MasterKeys(new, [old]))
    assert rotating.history("m1")[0].event == Joined("+44 1", 1)
    assert rotating.keys is not None
    done = rotating.keys.rotate()
    assert (done.rewrapped, done.current, done.erased) == (1, 0, 0)
    assert repository(stores, masters=MasterKeys(new)).history("m1")[0].event == Joined("+44 1", 1)
    with pytest.raises(MasterKeyError, match=old.id):
        repository(stores, masters=MasterKeys(old)).history("m1")


def test_a_master_key_is_read_from_base64_or_hex_and_bad_text_is_not_echoed() -> None:
    key = MasterKey.generate()
    assert MasterKey.parse(key.text()) == key
    assert MasterKey.parse(key.secret.hex()) == key
    with pytest.raises(MasterKeyError) as caught:
        MasterKey.parse("hunter2-is-not-a-key")
    assert "hunter2" not in str(caught.value)
    assert key.secret.hex() not in repr(key)


def test_a_key_is_bound_to_its_stream(stores: Stores) -> None:
    masters = MasterKeys(MasterKey.generate())
    repo = repository(stores, masters=masters)
    join(repo, "m1", "a")
    assert stores.keys is not None
    record = stores.keys.get("member-m1")
    assert record is not None
    with pytest.raises(MasterKeyError, match="another stream"):
        masters.unwrap(KeyRecord("member-m2", record.master_id, record.wrapped, record.created_at))


def test_the_store_file_holds_no_byte_of_a_sealed_field(tmp_path: Path) -> None:
    stores = open_stores(f"sqlite:///{tmp_path / 'members.db'}")
    try:
        repo = repository(stores, every=1)
        for n in range(5):
            join(repo, f"m{n}", f"+44 7700 90012{n}")
        repo.forget("m0", at=T0 + timedelta(days=1))
    finally:
        stores.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"7700" not in stored and b"key-of-ann" not in stored


class GatedSnapshots(InMemorySnapshotStore):
    """Snapshots written after the answer (as on Cassandra), each waiting until the test lets it through."""

    deferred_writes = True

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def save(self, snapshot: Snapshot) -> None:
        assert self.gate.wait(10), "the test never let the snapshot through"
        super().save(snapshot)


def test_a_snapshot_still_being_written_when_the_member_is_erased_is_removed_with_the_others() -> None:
    stores = open_stores("memory://")
    assert stores.keys is not None
    snapshots = GatedSnapshots()
    repo = Repository(
        Member,
        stores.events,
        codec(),
        snapshots=snapshots,
        snapshot_policy=SnapshotPolicy(every=1),
        stream_prefix="member-",
        keys=KeyRing(stores.keys, MasterKeys(MasterKey.generate())),
    )
    join(repo, "m1", "+44 1")  # its snapshot waits to be written
    threading.Timer(0.2, snapshots.gate.set).start()  # lands while the erasure runs

    repo.forget("m1", at=T0)

    repo.flush_snapshots(timeout=10)
    assert snapshots.versions("member-m1") == []
