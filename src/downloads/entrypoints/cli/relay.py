"""``downloads relay``: the read side in the foreground, publishing every accepted event to a Kafka topic."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from downloads.entrypoints.cli.common import UsageError, printable, settings_from, shown, store_option, traced

__all__ = ["add_commands"]


def _cmd_relay(args: argparse.Namespace) -> int:
    """Run the read side with the relay until interrupted (Ctrl-C); or remove the relay (``--forget``)."""
    from downloads.adapters.relay import RelayUnavailable, parse_destination
    from downloads.bootstrap import bootstrap, open_read_side
    from downloads.readmodels.readside import ReadSide

    if args.forget == bool(args.to):
        raise UsageError("give --to kafka://host:port/topic to relay, or --forget to remove the relay")
    extra: dict[str, Any] = {"create_schema": False}
    if args.to:
        parse_destination(args.to)  # a bad URL is refused before anything is opened
        extra.update(relay_to=args.to, relay_create_topic=args.create_topic or None)
    runtime = bootstrap(settings_from(args, **{k: v for k, v in extra.items() if v is not None}))
    try:
        read_side = open_read_side(runtime)
        assert isinstance(read_side, ReadSide)
        if args.forget:
            print(f"relay: {read_side.forget_relay()} version(s) removed from {shown(runtime.stores.url)}")
            read_side.close()
            return 0
        sink = read_side.relay
        try:
            sink.check()  # type: ignore[union-attr]
        except RelayUnavailable as exc:  # the broker may come back: the runner backs off and reports meanwhile
            print(printable(f"warning: {exc}"), file=sys.stderr)
        with traced():  # a span per relay batch, its context in each message's headers
            _run(read_side, f"relaying {shown(runtime.stores.url)} to {args.to} (Ctrl-C stops)")
    finally:
        runtime.close()
    return 0


def _run(read_side: Any, banner: str) -> None:
    stop = threading.Event()
    runner = threading.Thread(target=read_side.run, args=(stop,), name="read-side", daemon=True)
    runner.start()
    print(banner, file=sys.stderr)
    last = ""
    try:
        while runner.is_alive():
            states = {s.name: s for s in read_side.status()}
            relay = states.get("relay")
            if relay is not None:
                line = f"relay: {relay.position} relayed, {relay.lag_events} behind ({relay.lag_seconds:.1f} s)"
                if relay.error:
                    line += f"  error: {relay.error}"
                if line != last:
                    print(printable(line), file=sys.stderr)
                    last = line
            stop.wait(2.0)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        stop.set()
        runner.join(timeout=30)
        read_side.close()


def add_commands(sub: Any) -> None:
    """``relay``."""
    relay = sub.add_parser(
        "relay",
        help="run the read side, publishing every accepted event to a Kafka topic",
        description=(
            "Runs the read side (projections, title withdrawal) in the foreground, as `downloads project` does, "
            "and publishes every accepted event to a Kafka topic as a versioned JSON envelope, keyed by account. "
            "One runner of a deployment works at a time: run it instead of `downloads project`, or set "
            "DOWNLOADS_RELAY_TO where the read side runs."
        ),
    )
    relay.add_argument("--to", help="kafka://host:port[,host:port]/topic (env DOWNLOADS_RELAY_TO)")
    relay.add_argument("--create-topic", action="store_true", help="create the topic if it is missing (else: an error)")
    relay.add_argument("--forget", action="store_true", help="remove the relay from this deployment, then exit")
    store_option(relay)
    relay.set_defaults(run=_cmd_relay)
