"""The command line, ``python -m tools.kafka_broker VERB``; progress goes to stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tools.kafka_broker.base import BrokerError
from tools.kafka_broker.broker import DEFAULT_READY_TIMEOUT, DEFAULT_STOP_GRACE, LocalKafkaBroker
from tools.kafka_broker.classpath import fetch
from tools.kafka_broker.locations import DEFAULT_VERSION

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.kafka_broker",
        description="Run a local one-node Apache Kafka 4 broker in KRaft mode on 127.0.0.1:19092.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_p = sub.add_parser("fetch", help="download the broker's classpath once (needs mvn)")
    fetch_p.add_argument("--version", default=None, help=f"Kafka version (default {DEFAULT_VERSION})")
    fetch_p.add_argument("--force", action="store_true", help="fetch again even if cached")
    up = sub.add_parser("up", help="start (or reuse) the broker and wait until it serves")
    up.add_argument("--heap", default="256M")
    up.add_argument("--timeout", type=float, default=DEFAULT_READY_TIMEOUT, help="readiness timeout, seconds")
    up.add_argument("--wipe", action="store_true", help="delete its data first")
    down = sub.add_parser("down", help="stop the broker (SIGTERM, SIGKILL after a grace period)")
    down.add_argument("--grace", type=float, default=DEFAULT_STOP_GRACE)
    down.add_argument("--wipe", action="store_true", help="also delete its folder")
    sub.add_parser("status", help="say whether the broker runs and serves")
    for name, text in (("kill", "SIGKILL the broker"), ("pause", "SIGSTOP the broker"), ("resume", "SIGCONT it")):
        sub.add_parser(name, help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 ok, 1 failure, 2 usage error)."""
    args = build_parser().parse_args(argv)
    broker = LocalKafkaBroker()
    try:
        if args.command == "fetch":
            print(fetch(args.version, force=args.force))
        elif args.command == "up":
            broker.heap, broker.ready_timeout = args.heap, args.timeout
            if args.wipe:
                broker.stop(wipe=True)
            broker.start()
            print(broker.bootstrap)
        elif args.command == "down":
            broker.stop(wipe=args.wipe, grace=args.grace)
        elif args.command == "status":
            state = broker.state()
            serving = "serving" if broker.ready() else "not serving"
            print(f"kafka {broker.bootstrap} pid={broker.pid() or '-'} {state} {serving} ({broker.base_dir})")
        elif args.command == "kill":
            broker.kill()
        elif args.command == "pause":
            broker.pause()
        elif args.command == "resume":
            broker.resume()
        return 0
    except BrokerError as exc:
        print(f"BrokerError: {exc}", file=sys.stderr)
        return 1
