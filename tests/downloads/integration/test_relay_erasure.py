"""The relay and forgotten members, against a real Kafka broker on a SQLite store.

What the relay publishes of a member never holds their personal fields, neither in clear nor sealed:
not for a live member, not for an erased one, not for an account whose old events were stored in clear
before encryption, whether the relay ran before the erasure or starts after it. The erasure itself is
published (``AccountErased``, the account's last message), so consumers learn to forget the member.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, SetTitle
from downloads.bootstrap import Runtime, bootstrap, make_codec, open_read_side
from downloads.readmodels.readside import ReadSide
from downloads.settings import Settings
from eskit import open_stores
from tests.support.kafka import Received, consume, create_topic, fresh_topic
from tools.kafka_broker import LocalKafkaBroker

#: the personal values of the test's members: none may be found in any message, in any form
SECRETS = {
    "erased": ("erased-device-4d1f", "Erased-Secret-Model-77", "erased-idem-key-31"),
    "legacy": ("legacy-device-9c0a", "Legacy-Secret-Model-12", "legacy-idem-key-58"),
    "alive": ("alive-device-2b7e", "Alive-Secret-Model-90", "alive-idem-key-64"),
}


def write_member(runtime: Runtime, account: str) -> None:
    device, model, key = SECRETS[account]
    runtime.service.handle(OpenAccount(account, "premium"))
    runtime.service.handle(RegisterDevice(account, device, model), idempotency_key=key)
    runtime.service.handle(AcquireLicense(account, device, "film"), idempotency_key=key + "-2")


@contextmanager
def relaying(store: str, destination: str) -> Iterator[ReadSide]:
    runtime = bootstrap(Settings(store=store, relay_to=destination, create_schema=False))
    try:
        read_side = open_read_side(runtime)
        assert isinstance(read_side, ReadSide)
        try:
            yield read_side
        finally:
            read_side.close()
    finally:
        runtime.close()


def relay_everything(store: str, destination: str) -> int:
    """Run the read side, relay included, until the relay has every event (bounded); the relay's position."""
    with relaying(store, destination) as read_side:
        for _ in range(300):
            work = read_side.step(manage=False)
            relay = {s.name: s for s in read_side.status()}["relay"]
            assert relay.error is None, relay.error
            if work == 0 and relay.lag_events == 0:
                return relay.position
            if work == 0:
                time.sleep(0.1)  # a stream feed's hints settle
        raise AssertionError("the relay did not catch up")


def events_in(store: str) -> int:
    stores = open_stores(store)
    try:
        return sum(stores.events.version(stream) for stream in stores.events.stream_ids())
    finally:
        stores.close()


def in_order(received: list[Received], *, once: bool) -> list[Received]:
    """Messages in partition order; with ``once``, the first copy of each event only (as a consumer keeps)."""
    ordered = sorted(received, key=lambda m: (m.partition, m.offset))
    if not once:
        return ordered
    seen: set[str] = set()
    kept = []
    for message in ordered:
        event_id = orjson.loads(message.value)["event_id"]
        if event_id not in seen:
            seen.add(event_id)
            kept.append(message)
    return kept


def assert_nothing_personal(received: list[Received]) -> None:
    raw = b"\n".join(m.value + (m.key or b"") + b"".join(m.headers.values()) for m in received)
    for values in SECRETS.values():
        for value in values:
            assert value.encode() not in raw, f"{value!r} was published"
    assert b"$sealed" not in raw  # not even as ciphertext


def by_account(received: list[Received]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for message in received:
        envelope = orjson.loads(message.value)
        found.setdefault(envelope["account_id"] or envelope["stream_id"], []).append(envelope)
    return found


def test_the_relay_publishes_nothing_personal_of_any_member_and_publishes_their_erasure(
    tmp_path: Path, kafka: LocalKafkaBroker
) -> None:
    relay_across_erasures(f"sqlite:///{tmp_path / 'downloads.db'}", kafka, exact=True)


def relay_across_erasures(store: str, kafka: LocalKafkaBroker, *, exact: bool) -> None:
    """The scenario, on any store: ``exact`` where the relay sends no duplicate without a fault (SQLite);
    elsewhere duplicates are allowed and a consumer keeps each event's first copy."""
    settings = Settings(store=store, snapshot_every=0)
    before = bootstrap(settings, codec=make_codec(sealed=False))  # the code before encryption
    try:
        before.service.set_title(SetTitle("film", "default"))
        write_member(before, "legacy")  # stored in clear
    finally:
        before.close()
    runtime = bootstrap(settings)
    try:
        write_member(runtime, "erased")
        write_member(runtime, "alive")
    finally:
        runtime.close()

    live = fresh_topic("erasure")
    create_topic(kafka.bootstrap, live)
    relayed = relay_everything(store, f"kafka://{kafka.bootstrap}/{live}")
    if exact:
        assert relayed == events_in(store)

    runtime = bootstrap(settings)
    try:
        for account in ("erased", "legacy"):
            runtime.service.erase(account, by="dpo-test", request_id=f"ticket-{account}")
    finally:
        runtime.close()
    relayed_after = relay_everything(store, f"kafka://{kafka.bootstrap}/{live}")
    total = events_in(store)
    if exact:
        assert relayed_after == relayed + 2 == total  # the two erasures

    everything = consume(kafka.bootstrap, live, until=total)
    assert_nothing_personal(everything)
    received = in_order(everything, once=not exact)
    assert len(received) == total
    accounts = by_account(received)
    for account in ("erased", "legacy"):
        erasure = accounts[account][-1]
        assert erasure["type"] == "AccountErased"
        assert erasure["data"]["erased_by"] == "dpo-test" and erasure["data"]["request_id"] == f"ticket-{account}"
        assert erasure["withheld"] == []
    issued = next(e for e in accounts["alive"] if e["type"] == "LicenseIssued")
    assert issued["data"]["title_id"] == "film" and "device_id" not in issued["data"]
    assert issued["withheld"] == ["device_id"]  # a consumer can tell withheld from missing
    registered = next(e for e in accounts["legacy"] if e["type"] == "DeviceRegistered")
    assert registered["withheld"] == ["device_id", "model"]  # stored in clear, withheld all the same
    assert accounts["title-film"][0]["data"]["title_id"] == "film"  # nothing personal: published whole

    # A relay started after the erasures (removed, then started again on a new topic) publishes every
    # event from the first: still nothing personal, the same messages, and the erasures last.
    with relaying(store, f"kafka://{kafka.bootstrap}/{live}") as read_side:
        assert read_side.forget_relay() == 1
    again = fresh_topic("erasure")
    create_topic(kafka.bootstrap, again)
    relayed_again = relay_everything(store, f"kafka://{kafka.bootstrap}/{again}")
    if exact:
        assert relayed_again == total
    republished_all = consume(kafka.bootstrap, again, until=total)
    assert_nothing_personal(republished_all)
    republished = in_order(republished_all, once=not exact)
    assert sorted(m.value for m in republished) == sorted(m.value for m in received)
    assert {a: e[-1]["type"] for a, e in by_account(republished).items() if a != "title-film"} == {
        "erased": "AccountErased",
        "legacy": "AccountErased",
        "alive": "LicenseIssued",
    }
