"""``downloads history`` (an account's timeline) and ``downloads what-if`` (recorded commands under another policy)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any

from downloads.entrypoints.cli.common import parse_time, printable, progress_bar, settings_from, store_option

__all__ = ["add_commands"]


def _cmd_history(args: argparse.Namespace) -> int:
    from downloads.bootstrap import bootstrap

    settings = settings_from(args, create_schema=False)
    app = bootstrap(settings)
    try:
        service = app.service
        as_of = parse_time(args.as_of) if args.as_of else None
        page = service.history(args.account, limit=1000)
        events = page["events"]
        while page["next"] is not None:
            page = service.history(args.account, after=page["next"], limit=1000)
            events.extend(page["events"])
        if as_of is not None:
            events = [e for e in events if parse_time(e["recorded_at"]) <= as_of]
        shown = [e for e in events if _wanted(e["type"], parse_time(e["recorded_at"]), args)]
        for event in shown:
            data = " ".join(f"{k}={v}" for k, v in event["data"].items() if k not in ("at", "account_id"))
            print(printable(f"{event['seq']:>6}  {event['recorded_at']}  {event['type']:<18} {data}"))
        state = service.get_account(args.account, as_of=as_of)
        label = f"as of {args.as_of}" if as_of else "now"
        print(
            "\n"
            + printable(
                f"account {state['account_id']} {label}: plan={state['plan']} status={state['status']} "
                f"version={state['version']} devices_with_downloads={state['devices_with_downloads']}/"
                f"{state['device_limit']}"
            )
        )
        for device in state["devices"]:
            print(
                printable(
                    f"  device {device['device_id']} ({device['model']}): {device['status']}, "
                    f"{device['active_downloads']} active download(s)"
                )
            )
        if args.denials:
            _print_denials(service, args)
    finally:
        app.close()
    return 0


def _wanted(kind: str, at: datetime, args: argparse.Namespace) -> bool:
    """Whether the history's filters (``--type``, ``--from``, ``--to``) keep an entry."""
    if args.type and kind not in args.type:
        return False
    if args.since and at < parse_time(args.since):
        return False
    return not (args.until and at > parse_time(args.until))


def _print_denials(service: Any, args: argparse.Namespace) -> None:
    """The account's recorded denials (newest first), under the same time and command filters."""
    print("\ndenied commands (newest first):")
    after, count = None, 0
    while True:
        page = service.list_denials(args.account, after=after, limit=1000)
        for d in page["denials"]:
            if not _wanted(d["command"], parse_time(d["at"]), args):
                continue
            arguments = " ".join(f"{k}={v}" for k, v in d["args"].items())
            print(printable(f"  {d['at']}  {d['command']:<18} {arguments}  -> {d['code']}: {d['message']}"))
            count += 1
        if page["next"] is None:
            break
        after = page["next"]
    if count == 0:
        print("  (none)")


def _cmd_what_if(args: argparse.Namespace) -> int:
    """Re-decide recorded commands under another policy; print what would change. Writes nothing."""

    from downloads.adapters.policy_file import load_policy
    from downloads.application.whatif import WhatIf, WhatIfLimits, summarise
    from downloads.bootstrap import bootstrap

    other = load_policy(args.what_policy)
    runtime = bootstrap(settings_from(args, create_schema=False))
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    try:
        settings = runtime.settings
        limits = WhatIfLimits(commands=settings.what_if_max_commands, answer_bytes=settings.what_if_max_bytes)
        engine = WhatIf(runtime.service, other, limits=limits)  # per account; the summary keeps no decisions
        if args.accounts:
            for account_id in args.accounts:
                result = engine.account(account_id, since=since, until=until)
                print(printable(f"account {account_id}: {result.changed} of {result.commands} decisions change"))
                for d in result.decisions:
                    arguments = " ".join(f"{k}={v}" for k, v in d.args.items())
                    before = d.was[1] or d.was[0]
                    after = d.would_be[1] or d.would_be[0]
                    print(printable(f"  {d.at.isoformat()}  {d.command:<16} {arguments}: {before} -> {after}"))
                old, new = result.was, result.would_be
                print(
                    printable(
                        f"  in the end: {len(old.active_licenses())} -> {len(new.active_licenses())} active "
                        f"licenses, {len(old.devices_with_downloads())} -> {len(new.devices_with_downloads())} "
                        "devices with downloads"
                    )
                )
            return 0
        prefix = runtime.service.accounts.stream_prefix
        events = runtime.stores.events

        def account_ids() -> Any:
            after = None
            while page := events.stream_ids(after=after, limit=1000):
                yield from (s[len(prefix) :] for s in page if s.startswith(prefix))
                after = page[-1]

        started = time.monotonic()
        try:
            with progress_bar("re-deciding", unit="accounts") as advance:
                summary = summarise(engine, account_ids(), advance=advance)
        except KeyboardInterrupt:
            print("interrupted: nothing was written", file=sys.stderr)
            return 130
        print(
            f"{summary.accounts:,} accounts, {summary.commands:,} commands re-decided in "
            f"{time.monotonic() - started:.1f} s: {summary.changed:,} decisions would change"
            + (f", {summary.not_redecidable:,} recorded before commands were" if summary.not_redecidable else "")
            + (f"; {summary.erased:,} erased members skipped" if summary.erased else "")
        )
        if summary.by_change:
            print(f"  {'count':>7}  {'command':<16} {'was':<28} {'would be':<28} studio")
            for (command, was_code, would_code, studio), n in summary.by_change.most_common():
                print(printable(f"  {n:>7}  {command:<16} {was_code:<28} {would_code:<28} {studio}"))
    finally:
        runtime.close()
    return 0


def add_commands(sub: Any) -> None:
    """``what-if`` and ``history``."""
    what_if = sub.add_parser("what-if", help="re-decide recorded commands under another policy (writes nothing)")
    what_if.add_argument("accounts", nargs="*", metavar="ACCOUNT", help="accounts to show in detail (default: all)")
    what_if.add_argument("--policy", dest="what_policy", required=True, help="the other policy (TOML file)")
    what_if.add_argument("--from", dest="since", help="re-decide commands from this ISO 8601 time")
    what_if.add_argument("--to", dest="until", help="re-decide commands up to this ISO 8601 time")
    what_if.add_argument("--current-policy", dest="policy", help="the policy in force (env DOWNLOADS_POLICY)")
    store_option(what_if)
    what_if.set_defaults(run=_cmd_what_if)

    history = sub.add_parser("history", help="print an account's timeline")
    history.add_argument("account", help="account id")
    history.add_argument("--as-of", help="show the timeline and state up to this ISO 8601 time")
    history.add_argument(
        "--type",
        action="append",
        help="show only events of this type (e.g. LicenseIssued) or denials of this command; repeatable",
    )
    history.add_argument("--from", dest="since", help="show only what was recorded at or after this ISO 8601 time")
    history.add_argument("--to", dest="until", help="show only what was recorded at or before this ISO 8601 time")
    history.add_argument("--denials", action="store_true", help="also list the account's refused commands")
    store_option(history)
    history.set_defaults(run=_cmd_history)
