"""The ``downloads`` command: serve, store (init, export, import, copy, verify), token, history, read side.

Every option also reads its ``DOWNLOADS_*`` environment variable (see
:mod:`downloads.settings`). The project's own errors and bad input print
``ErrorName: message`` and exit 1 (2 for a bad policy); anything else is a bug and shows as one.
Whatever comes from the store is printed with non-printable characters escaped,
so stored text cannot drive the operator's terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from downloads.adapters.policy_file import PolicyError, parse_duration
from downloads.entrypoints.store_commands import add_store_commands
from downloads.errors import DownloadsError
from downloads.settings import Settings

__all__ = ["UsageError", "main", "printable"]


class UsageError(DownloadsError):
    """A mistake in how the command was called: printed as ``UsageError: message``."""


def printable(text: object) -> str:
    """``text`` with every character that is not printable (controls, format characters such
    as bidirectional overrides, line separators) written as a Python escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from the environment, overridden by the options given on the command line."""
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    given.update(extra)
    return Settings(**given)


def _parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError as exc:
        raise UsageError(f"not an ISO 8601 time: {text!r}") from exc
    except OverflowError as exc:
        raise UsageError(f"{text!r} has no UTC form (it is out of range)") from exc


def _run_http_server(settings: Settings, log_level: str) -> None:
    """Serve the app with the chosen server and its limits on slow and oversized requests.

    Granian (the default) bounds a request's head by size (431) and by time, and closes idle
    keep-alive connections after the same time; uvicorn is kept for comparison (``uvicorn-h11``
    bounds the head's size, neither bounds the time a head may take to arrive).
    """
    target = "downloads.entrypoints.http.app:create_app_from_env"
    if settings.server == "granian":
        from granian import Granian
        from granian.constants import HTTPModes, Interfaces
        from granian.http import HTTP1Settings
        from granian.log import LogLevels

        Granian(
            target,
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            workers=settings.workers,
            factory=True,
            http=HTTPModes.http1,
            websockets=False,
            backpressure=settings.max_concurrency,
            http1_settings=HTTP1Settings(
                header_read_timeout=int(settings.header_timeout * 1000), max_buffer_size=settings.max_header_bytes
            ),
            log_level=LogLevels(log_level),
            log_access=False,
            # A stop that arrives while a worker is still starting would otherwise wait forever.
            workers_kill_timeout=10,
        ).serve()
        return
    import uvicorn

    uvicorn.run(
        target,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=log_level,
        access_log=False,
        http="h11" if settings.server == "uvicorn-h11" else "httptools",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=max(1, int(settings.header_timeout)),
        limit_concurrency=settings.max_concurrency,  # per worker, as granian's backpressure
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from downloads.adapters.tokens import new_secret
    from downloads.bootstrap import bootstrap

    settings = _settings(args)
    # Open the store and read the policy once here, so a bad setting fails before any worker starts.
    bootstrap(settings).close()
    secret = settings.auth_secret
    if not secret:
        secret = new_secret()
        _show_dev_tokens(_signer(secret, settings))
    else:
        _signer(secret, settings)  # refuse a weak secret or a bad cap now, not in each worker
    env = {
        "DOWNLOADS_STORE": settings.store,
        "DOWNLOADS_AUTH_SECRET": secret,
        "DOWNLOADS_SNAPSHOT_EVERY": str(settings.snapshot_every),
        "DOWNLOADS_CACHE_SIZE": str(settings.cache_size),
        "DOWNLOADS_IDEMPOTENCY_HOURS": str(settings.idempotency_hours),
        "DOWNLOADS_MAX_BODY_BYTES": str(settings.max_body_bytes),
    }
    # The store exists now (the bootstrap above made it if allowed): workers only open it, so a
    # SQLite file removed while serving is reported, never silently made again.
    env["DOWNLOADS_CREATE_SCHEMA"] = "false"
    if settings.policy:
        env["DOWNLOADS_POLICY"] = os.path.abspath(settings.policy)
    os.environ.update(env)
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers write metrics to files here so /metrics sums every process.
        metrics_dir = tempfile.mkdtemp(prefix="downloads-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    print(
        f"downloads: serving on http://{settings.host}:{settings.port} with store {settings.store} "
        f"({settings.workers} worker{'s' if settings.workers > 1 else ''})",
        file=sys.stderr,
    )
    try:
        _run_http_server(settings, args.log_level)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _cmd_store_init(args: argparse.Namespace) -> int:
    from eskit import open_stores

    settings = _settings(args)
    stores = open_stores(settings.store, create_schema=True)
    try:
        stores.events.ping()
    finally:
        stores.close()
    print(f"store ready: {settings.store}")
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get("DOWNLOADS_AUTH_SECRET")
    if not secret:
        raise UsageError("no secret: set DOWNLOADS_AUTH_SECRET (the one the server uses) or pass --secret")
    try:
        ttl = parse_duration(args.ttl, "--ttl")
    except PolicyError as exc:  # a bad option, not a bad policy: exit 1 as other usage errors do
        raise UsageError(str(exc)) from None
    signer = _signer(secret, _settings(args))
    try:
        token = signer.issue(args.role, ttl_seconds=ttl.total_seconds(), subject=args.subject)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc}") from exc
    print(token)
    return 0


def _signer(secret: str, settings: Settings) -> Any:
    from downloads.adapters.tokens import TokenSigner, parse_max_ttl

    try:
        return TokenSigner(
            secret, previous=settings.auth_previous_secret, max_ttl=parse_max_ttl(settings.token_max_ttl)
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


#: where ``serve`` writes the tokens of a generated secret when stderr is not a terminal
DEV_TOKENS_FILE = "downloads-dev-tokens.txt"


def _show_dev_tokens(signer: Any) -> None:
    """Tokens for a generated secret: on the terminal, or in a file only its owner can read.

    Never into a log: stderr that is not a terminal usually ends up in log collection.
    """
    ttl = min(86400, signer.max_ttl["admin"], signer.max_ttl["service"])
    lines = [f"{role} {signer.issue(role, ttl_seconds=ttl)}" for role in ("service", "admin")]
    if sys.stderr.isatty():
        print(f"No DOWNLOADS_AUTH_SECRET set: generated one for this run. Tokens (valid {ttl}s):", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        return
    path = os.path.abspath(DEV_TOKENS_FILE)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # never write through a link, or into a file someone else can read
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write the dev tokens to {path}: {exc}; set DOWNLOADS_AUTH_SECRET") from exc
    print(f"No DOWNLOADS_AUTH_SECRET set: generated one for this run; tokens written to {path}", file=sys.stderr)


def _cmd_history(args: argparse.Namespace) -> int:
    from downloads.bootstrap import bootstrap

    settings = _settings(args, create_schema=False)
    app = bootstrap(settings)
    try:
        service = app.service
        as_of = _parse_time(args.as_of) if args.as_of else None
        page = service.history(args.account, limit=1000)
        events = page["events"]
        while page["next"] is not None:
            page = service.history(args.account, after=page["next"], limit=1000)
            events.extend(page["events"])
        if as_of is not None:
            events = [e for e in events if _parse_time(e["recorded_at"]) <= as_of]
        shown = [e for e in events if _wanted(e["type"], _parse_time(e["recorded_at"]), args)]
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
    if args.since and at < _parse_time(args.since):
        return False
    return not (args.until and at > _parse_time(args.until))


def _print_denials(service: Any, args: argparse.Namespace) -> None:
    """The account's recorded denials (newest first), under the same time and command filters."""
    print("\ndenied commands (newest first):")
    after, count = None, 0
    while True:
        page = service.list_denials(args.account, after=after, limit=1000)
        for d in page["denials"]:
            if not _wanted(d["command"], _parse_time(d["at"]), args):
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
    from downloads.entrypoints.store_commands import progress_bar

    other = load_policy(args.what_policy)
    runtime = bootstrap(_settings(args, create_schema=False))
    since = _parse_time(args.since) if args.since else None
    until = _parse_time(args.until) if args.until else None
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
        )
        if summary.by_change:
            print(f"  {'count':>7}  {'command':<16} {'was':<28} {'would be':<28} studio")
            for (command, was_code, would_code, studio), n in summary.by_change.most_common():
                print(printable(f"  {n:>7}  {command:<16} {was_code:<28} {would_code:<28} {studio}"))
    finally:
        runtime.close()
    return 0


def _open_read_side(args: argparse.Namespace) -> tuple[Any, Any]:
    from downloads.bootstrap import bootstrap, open_read_side

    runtime = bootstrap(_settings(args, create_schema=False))
    try:
        return runtime, open_read_side(runtime)
    except BaseException:
        runtime.close()
        raise


def _cmd_project(args: argparse.Namespace) -> int:
    """Run the read side in the foreground until interrupted (Ctrl-C), reporting progress."""
    runtime, read_side = _open_read_side(args)
    stop = threading.Event()
    runner = threading.Thread(target=read_side.run, args=(stop,), name="read-side", daemon=True)
    runner.start()
    print(f"projecting {runtime.stores.url.split('?', 1)[0]} (Ctrl-C stops)", file=sys.stderr)
    last = ""
    try:
        while runner.is_alive():
            states = read_side.status()
            line = "  ".join(f"{s.name}: {s.position} applied, {s.lag_events} behind" for s in states)
            errors = [f"{s.name}: {s.error}" for s in states if s.error]
            if line != last or errors:
                print(printable(line + ("  errors: " + "; ".join(errors) if errors else "")), file=sys.stderr)
                last = line
            stop.wait(2.0)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        stop.set()
        runner.join(timeout=30)
        read_side.close()
        runtime.close()
    return 0


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="downloads", description="Download-license accounting service.")
    sub = parser.add_subparsers(dest="command", required=True)

    def store_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", help="store URL (env DOWNLOADS_STORE; default sqlite:///downloads.db)")

    serve = sub.add_parser("serve", help="run the HTTP API")
    store_option(serve)
    serve.add_argument("--policy", help="policy TOML file (env DOWNLOADS_POLICY; default: built in)")
    serve.add_argument("--host", help="listen address (env DOWNLOADS_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (env DOWNLOADS_PORT; default 8000)")
    serve.add_argument("--workers", type=int, help="server processes (env DOWNLOADS_WORKERS; default 1)")
    serve.add_argument(
        "--log-level",
        default=os.environ.get("DOWNLOADS_LOG_LEVEL", "info"),
        choices=["critical", "error", "warning", "info", "debug"],
    )
    serve.set_defaults(run=_cmd_serve)

    store = sub.add_parser("store", help="manage the event store")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    init = store_sub.add_parser("init", help="create the keyspace and tables")
    store_option(init)
    init.set_defaults(run=_cmd_store_init)
    add_store_commands(store_sub, store_option)

    token = sub.add_parser("token", help="print a signed bearer token")
    token.add_argument("--role", required=True, choices=["service", "support", "admin"])
    token.add_argument(
        "--ttl", default="1h", help="validity, e.g. 15m, 1h, 7d (default 1h; at most the role's cap, see settings)"
    )
    token.add_argument("--subject", default="cli", help="who the token is for (default cli)")
    token.add_argument("--secret", help="signing secret (env DOWNLOADS_AUTH_SECRET)")
    token.set_defaults(run=_cmd_token)

    project = sub.add_parser("project", help="run the read side (projections, title withdrawal) in the foreground")
    store_option(project)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    from pydantic import ValidationError

    from downloads.domain import DomainError
    from eskit import EskitError

    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
        return status
    except (UsageError, PolicyError, EskitError, ValidationError) as exc:
        message = str(exc)
        if isinstance(exc, ValidationError):
            message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(printable(f"{type(exc).__name__}: {message}"), file=sys.stderr)
        return 2 if isinstance(exc, PolicyError) else 1
    except DomainError as exc:
        print(printable(f"{type(exc).__name__}: {exc.code}: {exc.message}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
