"""``downloads store init|export|import|copy|verify``: making, moving and checking a store's data.

Each shows progress on stderr (items, rate, and an estimate where the total is
known), stops cleanly on Ctrl-C (exit 130, saying how to resume), and prints a
summary at the end. The work itself is :mod:`eskit.transfer` and the verifiers.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from typing import Any

from downloads.entrypoints.cli.common import printable, progress_bar, settings_from, shown, store_option
from downloads.settings import Settings

__all__ = ["add_commands", "default_state_file"]


def _url(args: argparse.Namespace, name: str = "store") -> str:
    given = getattr(args, name, None)
    return str(given or Settings().store)


def _rate(count: int, started: float, unit: str = "events") -> str:
    elapsed = max(time.monotonic() - started, 1e-9)
    return f"{count:,} {unit} in {elapsed:.1f} s ({count / elapsed:,.0f}/s)"


def _cmd_store_init(args: argparse.Namespace) -> int:
    from eskit import open_stores

    settings = settings_from(args)
    stores = open_stores(settings.store, create_schema=True)
    try:
        stores.events.ping()
    finally:
        stores.close()
    print(f"store ready: {settings.store}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from eskit import open_stores
    from eskit.transfer import ArchiveError, export_store

    url = _url(args)
    stores = open_stores(url, create_schema=False)
    started = time.monotonic()
    try:
        summary = export_store(stores, args.file, progress=progress_bar)
    except KeyboardInterrupt:
        print(f"interrupted: no archive written (nothing is left at {args.file})", file=sys.stderr)
        return 130
    except ArchiveError as exc:  # a damaged store: say where to look, no archive is left
        raise ArchiveError(f"{exc}; no archive written (`downloads store verify` lists every problem)") from exc
    finally:
        stores.close()
    print(f"exported {summary.streams:,} streams, {_rate(summary.events, started)}, to {args.file}")
    print(f"sha256 {summary.sha256}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from downloads.adapters.master_keys import NoMasterKey
    from downloads.bootstrap import archive_decoder, complete_erasures
    from eskit import open_stores
    from eskit.transfer import carry_erasures, check_archive, import_store

    url = _url(args)
    settings = settings_from(args, store=url)
    decode = archive_decoder(settings) if args.decode else None
    # The whole archive is checked before the target is opened: a refused one leaves no file, no table.
    try:
        reader = check_archive(args.file, decode=decode, progress=progress_bar)
    except KeyboardInterrupt:
        print(f"interrupted while checking: {shown(url)} was not opened", file=sys.stderr)
        return 130
    erasures = open_stores(args.erasures_from, create_schema=False) if args.erasures_from else None
    stores = open_stores(url, create_schema=True)
    started = time.monotonic()
    atomic = stores.events.atomic_loads
    try:
        if erasures is not None and erasures.keys is not None and stores.keys is not None:
            carried = carry_erasures(erasures.keys, stores.keys)
            print(f"carried {carried:,} erasures from {shown(args.erasures_from)}", file=sys.stderr)
        result = import_store(reader, stores, resume=args.resume, progress=progress_bar)
    except KeyboardInterrupt:
        if atomic:
            print(f"interrupted: nothing was imported ({shown(url)} is as it was)", file=sys.stderr)
        else:
            print(
                f"interrupted: {shown(url)} holds part of the archive; run the same command with --resume to finish",
                file=sys.stderr,
            )
        return 130
    finally:
        stores.close()
        if erasures is not None:
            erasures.close()
    skipped = f" ({result.skipped:,} were there already)" if result.skipped else ""
    print(f"imported {result.summary.streams:,} streams, {_rate(result.written, started)}{skipped}, into {shown(url)}")
    try:
        completed = complete_erasures(settings_from(args, store=url, create_schema=False))
    except NoMasterKey as exc:
        print(f"erasures not checked ({exc}): run `downloads store verify` with the master key set", file=sys.stderr)
        return 0
    if completed:
        print(f"finished the erasure of {completed:,} members the archive held (their keys are erased here)")
    print(
        f"the archive was written at {reader.header.created_at.isoformat()}: members erased elsewhere since then "
        "are forgotten here only if their erasures were carried (--erasures-from, or `downloads erase` again)",
        file=sys.stderr,
    )
    return 0


def default_state_file(source: str, target: str) -> str:
    """Where a copy from ``source`` to ``target`` keeps its progress unless told otherwise."""
    digest = hashlib.sha256(f"{source}\n{target}".encode()).hexdigest()[:12]
    return f"downloads-copy-{digest}.json"


def _cmd_copy(args: argparse.Namespace) -> int:
    from eskit import EskitError, open_stores
    from eskit.transfer import CopyState, copy_store

    source_url, target_url = args.source, args.target
    if source_url == target_url:
        raise EskitError("--from and --to name the same store")
    state_path = os.path.abspath(args.state or default_state_file(source_url, target_url))
    state = CopyState.open(state_path, source=source_url, target=target_url)
    source = open_stores(source_url, create_schema=False)
    try:
        target = open_stores(target_url, create_schema=True)
    except BaseException:
        source.close()
        raise
    print(
        f"copying {shown(source_url)} to {shown(target_url)}"
        f"{' (resuming)' if state.started else ''}; progress kept in {state_path}"
        f"{'; Ctrl-C stops following' if args.follow else ''}",
        file=sys.stderr,
    )
    started = time.monotonic()
    try:
        result = copy_store(source, target, state, follow=args.follow, progress=progress_bar)
    except KeyboardInterrupt:
        if not args.follow:
            print("interrupted: run the same command again to resume where it stopped", file=sys.stderr)
            return 130
        print("stopped following", file=sys.stderr)
        return 0
    finally:
        target.close()
        source.close()
    skipped = f" ({result.skipped:,} were there already)" if result.skipped else ""
    reached = (
        f"source feed position {result.position:,}" if result.mode == "feed" else f"{result.position:,} streams walked"
    )
    print(f"copied {_rate(result.written, started)}{skipped}; caught up to {reached}")
    print("run it again to catch up with writes made since; stop writes to the source for the final run")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from downloads.application.verify import verify_service_store
    from downloads.bootstrap import bootstrap, open_read_side
    from downloads.readmodels.verify import verify_read_models
    from eskit.verify import VerifyReport

    runtime = bootstrap(settings_from(args, create_schema=False))
    report = VerifyReport(keep=args.max_problems)
    started = time.monotonic()
    read_rows = 0
    try:
        stores = runtime.stores
        with progress_bar("verifying", unit="streams") as advance:
            verify_service_store(runtime.service, stores.events, stores.snapshots, report=report, advance=advance)
        read_side = open_read_side(runtime)
        try:
            if read_side.exists():
                with progress_bar("read models", unit="rows") as advance:
                    read_rows = verify_read_models(read_side, runtime.service, report, advance=advance)
        finally:
            read_side.close()
    except KeyboardInterrupt:
        print(f"interrupted after {report.streams:,} streams: nothing was changed", file=sys.stderr)
        return 130
    finally:
        runtime.close()
    print(
        f"checked {report.streams:,} streams, {report.events:,} events, {report.snapshots:,} snapshots, "
        f"{read_rows:,} read-model rows in {time.monotonic() - started:.1f} s"
    )
    if report.erased:
        print(f"{report.erased:,} erased members: their personal fields cannot be read again (not damage)")
    if report.erased_in_clear:
        print(
            f"{report.erased_in_clear:,} events of erased members were written in clear before encryption: their "
            "personal fields are still in the store's rows (see docs/privacy.md)"
        )
    if report.sound:
        print("no problems found")
        return 0
    kinds = ", ".join(f"{kind}: {n:,}" for kind, n in sorted(report.counts.items()))
    print(f"{report.total_problems:,} problems ({kinds}); the first {len(report.problems)}:")
    for problem in report.problems:
        print(printable(f"  {problem}"))
    return 1


def add_commands(sub: Any) -> None:
    """``store init``, ``export``, ``import``, ``copy`` and ``verify``."""
    store = sub.add_parser("store", help="manage the event store")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    init = store_sub.add_parser("init", help="create the keyspace and tables")
    store_option(init)
    init.set_defaults(run=_cmd_store_init)
    export = store_sub.add_parser("export", help="write every stream's events to an archive file")
    export.add_argument("file", help="archive to write (gzip JSON lines, e.g. backup.jsonl.gz)")
    store_option(export)
    export.set_defaults(run=_cmd_export)

    load = store_sub.add_parser("import", help="load an archive into an empty store")
    load.add_argument("file", help="archive written by store export")
    load.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted import of this file into a store that holds part of it (Cassandra; on SQLite "
        "an import is all or nothing)",
    )
    load.add_argument(
        "--decode", action="store_true", help="also check that this application can decode every event of the archive"
    )
    load.add_argument(
        "--erasures-from",
        metavar="URL",
        help="a store whose erasures the import keeps (e.g. the store the archive came from): members erased "
        "there since the archive was written stay unreadable here",
    )
    store_option(load)
    load.set_defaults(run=_cmd_import)

    copy = store_sub.add_parser("copy", help="copy every event from one store to another (resumable)")
    copy.add_argument("--from", dest="source", required=True, help="source store URL")
    copy.add_argument("--to", dest="target", required=True, help="target store URL (empty, or a copy under way)")
    copy.add_argument("--state", help="file keeping the copy's progress (default downloads-copy-<hash>.json here)")
    copy.add_argument("--follow", action="store_true", help="keep copying new writes until Ctrl-C")
    copy.set_defaults(run=_cmd_copy)

    verify = store_sub.add_parser("verify", help="check every stream, snapshot, limit and read-model row")
    store_option(verify)
    verify.add_argument("--policy", help="policy TOML file the limits are checked against (env DOWNLOADS_POLICY)")
    verify.add_argument("--max-problems", type=int, default=50, help="how many problems to list (default 50)")
    verify.set_defaults(run=_cmd_verify)
