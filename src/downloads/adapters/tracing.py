"""OpenTelemetry traces: exported over OTLP when the standard ``OTEL_*`` variables ask for it, absent otherwise.

:func:`start_tracing` reads the environment as the OpenTelemetry SDK defines it: an endpoint in
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL,
``/v1/traces`` appended) turns tracing on; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
keeps it off. The SDK itself reads the rest: ``OTEL_SERVICE_NAME`` (default here: ``downloads``),
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and its argument, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_EXPORTER_OTLP_TIMEOUT``, ``OTEL_BSP_*`` (the batch processor's queue and delays) and
``OTEL_PROPAGATORS`` (default: W3C ``traceparent`` and baggage). Spans leave over OTLP/HTTP with
protobuf; another protocol is refused with a clear error rather than ignored.

Once started, the SDK's tracer is installed in :mod:`eskit.tracing`, which the service's commands,
its store wrappers and eskit's projectors speak to. When tracing is off none of this is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from typing import TYPE_CHECKING, Any

import eskit.tracing
from downloads.errors import DownloadsError
from eskit.tracing import Attribute

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span as OTelSpan
    from opentelemetry.trace import Tracer as OTelTracer

__all__ = [
    "UNTRACED_PATHS",
    "RequestSpans",
    "TracingError",
    "check_tracing",
    "current_ids",
    "inject_headers",
    "start_tracing",
    "stop_tracing",
    "tracing_wanted",
    "use_provider",
]

#: the protocols of OTLP this service exports with (the SDK's HTTP exporter)
PROTOCOLS = ("http/protobuf",)


class TracingError(DownloadsError, ValueError):
    """The ``OTEL_*`` variables ask for tracing this service cannot do (another protocol, another exporter)."""


def tracing_wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``env`` (default: this process's) asks for traces to be exported over OTLP."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporters == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def check_tracing(env: Mapping[str, str] | None = None) -> bool:
    """Whether tracing is wanted; raises :class:`TracingError` when it is, in a way this service cannot do."""
    env = os.environ if env is None else env
    if not tracing_wanted(env):
        return False
    _check(env)
    return True


def _check(env: Mapping[str, str]) -> None:
    exporters = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporters != "otlp":
        raise TracingError(f"OTEL_TRACES_EXPORTER={exporters!r}: this service exports traces with 'otlp' (or 'none')")
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or PROTOCOLS[0]
    if protocol.strip().lower() not in PROTOCOLS:
        raise TracingError(
            f"OTLP protocol {protocol!r} is not supported: set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf "
            "(collectors and Jaeger take it on port 4318)"
        )


class _Span:
    """:class:`eskit.tracing.Span` over an SDK span."""

    __slots__ = ("_span",)

    def __init__(self, span: OTelSpan) -> None:
        self._span = span

    def set(self, key: str, value: Attribute) -> None:
        self._span.set_attribute(key, value)

    def event(self, name: str, attributes: dict[str, Attribute]) -> None:
        self._span.add_event(name, attributes)

    def fail(self, error: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.record_exception(error)
        self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))


class _Unsampled:
    """The span of work whose trace is not sampled: records nothing."""

    __slots__ = ()

    def set(self, key: str, value: Attribute) -> None:
        pass

    def event(self, name: str, attributes: dict[str, Attribute]) -> None:
        pass

    def fail(self, error: BaseException) -> None:
        pass


#: what a span inside an unsampled trace is: one shared, reusable block that records nothing
_UNSAMPLED = nullcontext(_Unsampled())


class _Tracer:
    """:class:`eskit.tracing.Tracer` over the SDK's tracer."""

    def __init__(self, tracer: OTelTracer) -> None:
        from opentelemetry.trace import SpanKind, get_current_span

        self._tracer = tracer
        self._current = get_current_span
        self._kinds = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT, "producer": SpanKind.PRODUCER}

    def span(
        self, name: str, attributes: dict[str, Attribute], *, kind: str = "internal"
    ) -> AbstractContextManager[Any]:
        parent = self._current().get_span_context()
        if parent.is_valid and not parent.trace_flags.sampled:
            # Under a request the sampler left out, the SDK would make a span only to drop it: the
            # commands and store calls of the requests not sampled cost one check each.
            return _UNSAMPLED
        return self._open(name, attributes, kind)

    def _open(self, name: str, attributes: dict[str, Attribute], kind: str) -> _Current:
        span = self._tracer.start_span(
            name, kind=self._kinds[kind], attributes=attributes, record_exception=False, set_status_on_exception=False
        )
        return _Current(span, _Span(span))


class _Current:
    """A started span made current for a block, then ended: what the SDK's ``start_as_current_span``
    does, without its two generator-based context managers, which cost more than the span itself
    when the request is not sampled (``bench http``). Exceptions are recorded by the callers."""

    __slots__ = ("_given", "_span", "_token")

    def __init__(self, span: OTelSpan, given: Any) -> None:
        self._span = span
        self._given = given
        self._token: object = None

    def __enter__(self) -> Any:
        attach, _, in_context = _context_functions()
        self._token = attach(in_context(self._span))
        return self._given

    def __exit__(self, *_: object) -> None:
        _, detach, _ = _context_functions()
        try:
            detach(self._token)
        finally:
            self._span.end()


@cache
def _context_functions() -> tuple[Any, Any, Any]:
    """OpenTelemetry's context ``attach``, ``detach`` and ``set_span_in_context``, imported once tracing runs."""
    from opentelemetry import context, trace

    return context.attach, context.detach, trace.set_span_in_context


_provider: TracerProvider | None = None


def start_tracing(env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Start exporting spans when ``env`` asks for it (see the module docstring); None when it does not.

    Call once per process (each server worker calls it from the app factory); a second call returns
    the provider already started. Raises :class:`TracingError` for settings this service cannot honour.
    """
    global _provider
    env = os.environ if env is None else env
    if not check_tracing(env):
        return None
    if _provider is not None:
        return _provider
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    defaults = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "downloads"}
    provider = TracerProvider(resource=Resource.create(defaults))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    use_provider(provider)
    _provider = provider
    return provider


def use_provider(provider: TracerProvider) -> None:
    """Send this process's spans (commands, store calls, batches) to ``provider``'s tracer: for an
    application embedding the service with a provider of its own, and for tests."""
    eskit.tracing.install(_Tracer(provider.get_tracer("downloads")))


def stop_tracing() -> None:
    """Send the spans still queued (bounded by the exporter's timeout) and stop tracing in this process."""
    global _provider
    provider, _provider = _provider, None
    eskit.tracing.install(None)
    if provider is not None:
        provider.shutdown()


def current_ids() -> tuple[str, str] | None:
    """The trace and span ids (hex) of the span current in this thread or task; None when there is none."""
    if eskit.tracing.tracer() is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def inject_headers() -> list[tuple[str, bytes]]:
    """The current span's context as message headers (W3C ``traceparent``, and ``tracestate`` when set),
    for a downstream consumer to continue the trace; empty when nothing traces."""
    if eskit.tracing.tracer() is None:
        return []
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


#: paths that get no span: probes and scrapes, many times a minute, would bury the requests
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

#: the headers a caller's trace context comes in (W3C Trace Context and Baggage)
_CONTEXT_HEADERS = {b"traceparent": "traceparent", b"tracestate": "tracestate", b"baggage": "baggage"}


class RequestSpans:
    """Server spans for HTTP requests, under the caller's ``traceparent`` when it sends one.

    Written here rather than taken from the ASGI instrumentation, which in the HTTP benchmark cost
    more per request than everything else that tracing adds: this one reads only the context headers,
    names the span by the route's template (never the raw path, which may hold device or license ids)
    and records the status, the request id and the account's pseudonymous id.
    """

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        self._tracer = provider.get_tracer("downloads.http")
        self._extract = propagate.extract
        self._server = SpanKind.SERVER

    def span(self, method: str, headers: Any) -> AbstractContextManager[OTelSpan]:
        """The request's span, current for the block; ``headers`` are the ASGI scope's."""
        carrier = {_CONTEXT_HEADERS[k]: bytes(v).decode("latin-1") for k, v in headers if k in _CONTEXT_HEADERS}
        span = self._tracer.start_span(
            method,
            context=self._extract(carrier) if carrier else None,
            kind=self._server,
            attributes={"http.request.method": method},
            record_exception=False,
            set_status_on_exception=False,
        )
        return _Current(span, span)

    @staticmethod
    def answered(span: OTelSpan, method: str, route: str | None, status: int, request_id: str, account: Any) -> None:
        """Name the span by its route and record the answer (a 5xx marks it failed)."""
        if not span.is_recording():
            return
        template = route or "unmatched"
        span.update_name(f"{method} {template}")
        span.set_attribute("http.route", template)
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("downloads.request_id", request_id)
        if isinstance(account, str):
            span.set_attribute("downloads.account_id", account)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))

    @staticmethod
    def failed(span: OTelSpan, error: BaseException) -> None:
        """The request raised (the server answers 500 outside it)."""
        from opentelemetry.trace import Status, StatusCode

        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
