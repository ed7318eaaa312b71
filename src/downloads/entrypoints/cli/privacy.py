"""``downloads erase ACCOUNT`` (forget a member) and ``downloads keys new|rotate`` (the master key)."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

from downloads.entrypoints.cli.common import printable, progress_bar, settings_from, store_option

__all__ = ["add_commands"]


def _cmd_erase(args: argparse.Namespace) -> int:
    from downloads.application.presenters import iso
    from downloads.bootstrap import bootstrap

    runtime = bootstrap(settings_from(args, create_schema=False))
    try:
        by = args.by or f"cli:{getpass.getuser()}"
        for account_id in args.accounts:
            done = runtime.service.erase(account_id, by=by, request_id=args.request_id)
            print(printable(f"erased {account_id} at {iso(done['erased_at'])}"))
    finally:
        runtime.close()
    return 0


def _cmd_keys_new(_: argparse.Namespace) -> int:
    from eskit.privacy import MasterKey

    key = MasterKey.generate()
    print(key.text())
    print(f"master key id {key.id}: keep it in your secret store and set DOWNLOADS_MASTER_KEY to it", file=sys.stderr)
    return 0


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    from downloads.bootstrap import bootstrap

    runtime = bootstrap(settings_from(args, create_schema=False))
    started = time.monotonic()
    try:
        ring = runtime.service.accounts.keys
        if ring is None:
            print("this store keeps no keys", file=sys.stderr)
            return 1
        with progress_bar("rewrapping", unit="keys") as advance:
            done = ring.rotate(progress=advance)
    except KeyboardInterrupt:
        print("interrupted: run it again to finish (keys rewrapped so far stay rewrapped)", file=sys.stderr)
        return 130
    finally:
        runtime.close()
    print(
        f"{done.rewrapped:,} keys rewrapped by master key {ring.masters.current.id}, {done.current:,} were already, "
        f"{done.erased:,} erased, in {time.monotonic() - started:.1f} s; the previous master key wraps none now"
    )
    return 0


def add_commands(sub: Any) -> None:
    """``erase`` and ``keys``."""
    erase = sub.add_parser("erase", help="forget members: destroy their keys (irreversible; see docs/privacy.md)")
    erase.add_argument("accounts", nargs="+", metavar="ACCOUNT", help="account ids to erase")
    erase.add_argument("--by", help="who asks, recorded with the erasure (default cli:<user>)")
    erase.add_argument("--request-id", help="the request id recorded with the erasure (e.g. the ticket)")
    store_option(erase)
    erase.set_defaults(run=_cmd_erase)

    keys = sub.add_parser("keys", help="the master key that wraps members' keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="print a new random master key (for DOWNLOADS_MASTER_KEY)")
    new.set_defaults(run=_cmd_keys_new)
    rotate = keys_sub.add_parser(
        "rotate",
        help="rewrap every member's key by DOWNLOADS_MASTER_KEY (the old one given as DOWNLOADS_MASTER_PREVIOUS_KEY)",
    )
    store_option(rotate)
    rotate.set_defaults(run=_cmd_keys_rotate)
