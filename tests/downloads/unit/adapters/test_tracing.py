"""Tracing: which ``OTEL_*`` settings turn it on, what it costs when off (nothing is imported), and the
command span's record of attempts and conflicts, read from the real SDK's in-memory exporter."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import eskit.tracing
from downloads.adapters.tracing import TracingError, check_tracing, tracing_wanted, use_provider
from downloads.application import DeactivateDevice, RegisterDevice
from downloads.domain import DomainError
from tests.downloads.factories import start_service

BASE = "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": BASE}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": BASE + "/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": BASE, "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": BASE, "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_on_only_where_an_endpoint_is_set_and_not_disabled(env: dict[str, str], wanted: bool) -> None:
    assert tracing_wanted(env) is wanted
    assert check_tracing(env) is wanted


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": BASE, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": BASE, "OTEL_TRACES_EXPORTER": "zipkin"},
    ],
)
def test_settings_this_service_cannot_honour_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(TracingError):
        check_tracing(env)


def test_serve_refuses_an_unsupported_protocol_before_starting(tmp_path: Path) -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": BASE, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    env["DOWNLOADS_AUTH_SECRET"] = "s" * 40
    cmd = [sys.executable, "-m", "downloads.entrypoints.cli", "serve", "--store", f"sqlite:///{tmp_path / 'd.db'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr  # the CLI's status for a UsageError
    assert done.stderr.startswith("UsageError: OTLP protocol 'grpc'"), done.stderr
    assert "Traceback" not in done.stderr


def test_an_app_without_otel_settings_sets_up_no_tracing(tmp_path: Path) -> None:
    """Off costs nothing of ours: no SDK, exporter or instrumentation is imported, no tracer provider is
    set (FastAPI's own telemetry then stays off too), no tracer is installed for commands and stores."""
    code = (
        "import sys\n"
        "from opentelemetry import trace\n"
        "from downloads.entrypoints.http.app import create_app\n"
        "from downloads.settings import Settings\n"
        "import eskit.tracing\n"
        f"create_app(Settings(store='sqlite:///{tmp_path / 'd.db'}', auth_secret='{'s' * 40}'))\n"
        "heavy = [m for m in sys.modules if m.split('.')[:2] in (['opentelemetry', 'sdk'],\n"
        "    ['opentelemetry', 'exporter'], ['opentelemetry', 'instrumentation'])]\n"
        "print(heavy, type(trace.get_tracer_provider()).__name__, eskit.tracing.tracer())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] ProxyTracerProvider None"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_provider(provider)
    try:
        yield exporter
    finally:
        eskit.tracing.install(None)
        provider.shutdown()


def test_a_command_span_counts_its_attempts_and_records_each_conflict(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    # two services on one file, as two server workers: each keeps its own cache, so their appends conflict
    store = f"sqlite:///{tmp_path / 'downloads.db'}"
    d, other = start_service(store=store), start_service(store=store)
    d.account("acct-1", plan="basic")
    spans.clear()  # only the racing commands' spans from here
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def register(worker: int) -> None:
        start.wait()
        for n in range(15):  # four writers on one account
            try:
                service = (d, other)[worker % 2].service
                service.handle(RegisterDevice("acct-1", f"dev-{worker}-{n}", "m"))
                service.handle(DeactivateDevice("acct-1", f"dev-{worker}-{n}"))
            except DomainError:  # a refusal (the device limit) is an outcome like any other
                pass
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=register, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    d.close()
    other.close()
    assert not errors, errors
    names = ("command register_device", "command deactivate_device")
    commands = [s for s in spans.get_finished_spans() if s.name in names]
    assert len(commands) == 4 * 15 * 2
    conflicted = 0
    for span in commands:
        attributes = dict(span.attributes or {})
        assert attributes["downloads.account_id"] == "acct-1"
        if attributes["downloads.outcome"] != "OK":
            continue
        conflicts = [e for e in span.events if e.name == "conflict"]
        assert attributes["downloads.conflicts"] == len(conflicts)
        assert attributes["downloads.attempts"] == len(conflicts) + 1
        conflicted += bool(conflicts)
    assert conflicted, "four writers on one account met no conflict: the test proves nothing"


def test_commands_follow_the_sampling_of_the_request_they_serve(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    left_out = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")  # a request the sampler left out
    use_provider(provider)
    d = start_service()
    try:
        with left_out.start_as_current_span("request not sampled"):
            d.account("acct-1", plan="basic")
        assert exporter.get_finished_spans() == ()
        with provider.get_tracer("test").start_as_current_span("request sampled"):
            d.account("acct-2", plan="basic")
        names = [s.name for s in exporter.get_finished_spans()]
        assert "request sampled" in names and any(n.startswith("command ") for n in names), names
    finally:
        d.close()
        eskit.tracing.install(None)
        provider.shutdown()
