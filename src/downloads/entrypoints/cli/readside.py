"""``downloads project`` (the read side in the foreground) and ``downloads projections status|rebuild``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

from downloads.entrypoints.cli.common import (
    PARENT_VARIABLE,
    STOPPED_ON_SIGNAL,
    UsageError,
    printable,
    settings_from,
    shown,
    store_option,
    traced,
)

__all__ = ["add_commands"]


def _open_read_side(args: argparse.Namespace) -> tuple[Any, Any]:
    from downloads.bootstrap import bootstrap, open_read_side

    runtime = bootstrap(settings_from(args, create_schema=False))
    try:
        return runtime, open_read_side(runtime)
    except BaseException:
        runtime.close()
        raise


def _cmd_project(args: argparse.Namespace) -> int:
    """Run the read side in the foreground until interrupted (Ctrl-C), reporting progress."""
    with traced():
        return _project(args)


def _project(args: argparse.Namespace) -> int:
    parent = os.environ.get(PARENT_VARIABLE)
    if parent is not None and parent != str(os.getppid()):
        raise UsageError(
            f"{PARENT_VARIABLE}={parent!r} names a serve that is not this process's parent: serve sets it for the "
            "read side's process it starts (unset it to run `downloads project` on its own)"
        )
    runtime, read_side = _open_read_side(args)
    stop = threading.Event()
    runner = threading.Thread(target=read_side.run, args=(stop,), name="read-side", daemon=True)
    runner.start()
    quiet = args.quiet
    if not quiet:
        print(f"projecting {shown(runtime.stores.url)} (Ctrl-C stops)", file=sys.stderr)
    if parent is not None:
        # Under serve: a Ctrl-C on the terminal reaches serve too, which stops this process with SIGTERM
        # once its workers are down; ignored here, it cannot interrupt that stop half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM (a service manager's stop, or serve's) finishes the batch as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    last = ""
    status = 0
    try:
        while runner.is_alive():
            if parent is not None and str(os.getppid()) != parent:
                break  # the serve that started this process is gone
            if not quiet:
                last = _report(read_side, last)
            stop.wait(2.0)
    except KeyboardInterrupt:
        if not quiet:
            print("stopping", file=sys.stderr)
        status = STOPPED_ON_SIGNAL if parent is not None else 0
    finally:
        stop.set()
        runner.join(timeout=30)
        read_side.close()
        runtime.close()
    return status


def _report(read_side: Any, last: str) -> str:
    """Print the projections' positions when they moved, and their errors; returns the line printed."""
    try:
        states = read_side.status()
    except Exception as exc:  # the store did not answer: the runner retries its own work, say so and go on
        print(printable(f"status unavailable: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return last
    line = "  ".join(f"{s.name}: {s.position} applied, {s.lag_events} behind" for s in states)
    errors = [f"{s.name}: {s.error}" for s in states if s.error]
    if line != last or errors:
        print(printable(line + ("  errors: " + "; ".join(errors) if errors else "")), file=sys.stderr)
    return line


def _interrupt(_signum: int, _frame: Any) -> None:
    # Once: the stop that follows (the batch finished, the lease released) is not interrupted again.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _cmd_projections_status(args: argparse.Namespace) -> int:
    runtime, read_side = _open_read_side(args)
    try:
        print(f"{'name':<20} {'status':<10} {'position':>10} {'lag':>8} {'lag s':>8}  error")
        for s in read_side.status():
            status = "caught_up" if s.status == "caught_up" else ("failing" if s.error else "behind")
            print(
                printable(
                    f"{s.name:<20} {status:<10} {s.position:>10} {s.lag_events:>8} {s.lag_seconds:>8.1f}"
                    f"  {s.error or ''}"
                )
            )
    finally:
        read_side.close()
        runtime.close()
    return 0


def _cmd_projections_rebuild(args: argparse.Namespace) -> int:
    runtime, read_side = _open_read_side(args)
    started = time.monotonic()

    def progress(done: int, total: int | None) -> None:
        if total is None:  # filled stream by stream: how many streams there are is not known in advance
            print(f"  {args.name}: {done:,} streams swept", file=sys.stderr)
            return
        rate = done / max(time.monotonic() - started, 1e-9)
        left = (total - done) / rate if rate else 0.0
        print(f"  {args.name}: {done:,} of {total:,} events ({rate:,.0f}/s, about {left:.0f} s left)", file=sys.stderr)

    try:
        names = read_side.names
        if args.name not in names:
            raise UsageError(f"no projection {args.name!r}: one of {', '.join(names)}")
        version = read_side.rebuild(args.name, progress=progress)
        print(f"{args.name}: rebuilt as version {version} in {time.monotonic() - started:.1f} s; it now answers reads")
    finally:
        read_side.close()
        runtime.close()
    return 0


def add_commands(sub: Any) -> None:
    """``project`` and ``projections status|rebuild``."""
    project = sub.add_parser("project", help="run the read side (projections, title withdrawal) in the foreground")
    store_option(project)
    project.add_argument(
        "--quiet", action="store_true", help="print no progress (errors are still logged), as under `serve`"
    )
    project.set_defaults(run=_cmd_project)

    projections = sub.add_parser("projections", help="the read side's projections")
    projections_sub = projections.add_subparsers(dest="projections_command", required=True)
    status = projections_sub.add_parser("status", help="position, lag and last error of each projection")
    store_option(status)
    status.set_defaults(run=_cmd_projections_status)
    rebuild = projections_sub.add_parser("rebuild", help="rebuild a projection from the start, then switch to it")
    rebuild.add_argument("name", help="projection name (see projections status)")
    store_option(rebuild)
    rebuild.set_defaults(run=_cmd_projections_rebuild)
