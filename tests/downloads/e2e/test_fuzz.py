"""Bad input never breaks the server: generated and hostile requests get a 4xx with the envelope, never a 5xx.

Schemathesis generates requests from the running server's own OpenAPI schema (valid and invalid
data, steered half the time onto accounts, devices, licenses and titles that exist, so rules run
and not only validation), sends them over real HTTP with an admin token, and checks that no answer
is a server error and that every 4xx body is the error envelope. A list of hand-picked hostile
requests follows, each of which must be refused with a 4xx and the envelope, and write nothing.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.support.server import Server, expect_error, read_all_events, running_server

#: generated requests per operation and generation mode (valid data, then invalid data)
EXAMPLES = 100


@dataclass
class Seeded:
    """The data the fuzzing is steered onto."""

    accounts: list[str]
    devices: list[str]
    licenses: list[str]
    titles: list[str]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@pytest.fixture(scope="module")
def seeded(fuzz_server: Server) -> Seeded:
    return _seed(fuzz_server)


def _seed(fuzz_server: Server, suffix: str = "") -> Seeded:
    """Three accounts with two devices each, holding licenses for both demo titles."""
    accounts, licenses = [f"fuzz-{plan}{suffix}" for plan in ("basic", "standard", "premium")], []
    with fuzz_server.client("admin") as http:
        for account, plan in zip(accounts, ["basic", "standard", "premium"], strict=True):
            assert http.post("/v1/accounts", json={"account_id": account, "plan": plan}).status_code == 201
            for device in ("d1", "d2"):
                registered = http.post(f"/v1/accounts/{account}/devices", json={"device_id": device, "model": "phone"})
                assert registered.status_code == 201, registered.text
            for title in ("demo-title-1", "demo-title-2"):
                issued = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d1", "title_id": title})
                assert issued.status_code == 201, issued.text
                licenses.append(issued.json()["license_id"])
        assert http.put("/v1/titles/fuzz-title", json={"studio": "restricted"}).status_code == 200
    return Seeded(accounts, ["d1", "d2"], licenses, ["demo-title-1", "demo-title-2", "fuzz-title"])


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server, seeded: Seeded) -> Any:
    return _steered_schema(fuzz_server, seeded)


def _steered_schema(fuzz_server: Server, seeded: Seeded) -> Any:
    """The running server's schema, with hooks that swap known values into half the generated requests."""
    loaded = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json", timeout=30)
    ids = {
        "account_id": st.sampled_from(seeded.accounts),
        "device_id": st.sampled_from(seeded.devices),
        "license_id": st.sampled_from(seeded.licenses),
        "title_id": st.sampled_from(seeded.titles),
    }
    fields = {
        **ids,
        "plan": st.sampled_from(["basic", "standard", "premium"]),
        "studio": st.sampled_from(["default", "restricted"]),
        "license_ids": st.lists(st.sampled_from(seeded.licenses), max_size=4),
    }

    def steer(values: Any, known: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
        """The generated values, or the same with known ones swapped in."""
        if not isinstance(values, dict) or not known.keys() & values.keys():
            return st.just(values)
        swapped = st.fixed_dictionaries({k: known[k] for k in known.keys() & values.keys()})
        return st.one_of(st.just(values), swapped.map(lambda new: {**values, **new}))

    @loaded.hook
    def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
        # Closing or erasing the seeded accounts, deactivating their devices or rewriting the seeded titles
        # would leave the operations fuzzed after these with nothing to act on.
        label = context.operation.label
        if label in (
            "POST /v1/accounts/{account_id}/close",
            "POST /v1/accounts/{account_id}/erase",
            "DELETE /v1/accounts/{account_id}/devices/{device_id}",
            "PUT /v1/titles/{title_id}",
        ):
            return st.just(path_parameters)
        return steer(path_parameters, ids)

    @loaded.hook
    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
        return steer(body, fields)

    return loaded


def error_envelope(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx body is ``{"error": {"code": str, "message": str, "details": object}}``."""
    if 400 <= response.status_code < 500:
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, body
        error = body["error"]
        assert isinstance(error, dict) and set(error) == {"code", "message", "details"}, error
        assert isinstance(error["code"], str) and error["code"], error
        assert isinstance(error["message"], str), error
        assert isinstance(error["details"], dict), error


# -- hand-picked hostile requests ------------------------------------------------------------------------------------

TARGET = "hostile-target"
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Hostile:
    """A request to send (``{a}`` in the path is the target account, ``{l}`` its license) and the answer due."""

    name: str
    method: str
    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    status: int | None = None  # None: any 4xx
    code: str | None = None
    role: str = "admin"


def raw(body: bytes) -> dict[str, Any]:
    return {"content": body, "headers": JSON}


def big_stream() -> Iterator[bytes]:
    """A chunked body with no Content-Length, larger than the limit."""
    for _ in range(100):
        yield b" " * 1024


HOSTILE = [
    # identifiers in the path
    Hostile("id of 10k characters", "GET", "/v1/accounts/" + "a" * 10_000, status=422, code="VALIDATION_ERROR"),
    Hostile("id of 60k characters", "GET", "/v1/accounts/" + "a" * 60_000),
    Hostile("unicode id", "GET", "/v1/accounts/ünïcødé-🙂", status=422, code="VALIDATION_ERROR"),
    Hostile("right-to-left id", "POST", "/v1/accounts/\u202eevil/close", status=422, code="VALIDATION_ERROR"),
    Hostile("null byte in id", "GET", "/v1/accounts/a%00b", status=422, code="VALIDATION_ERROR"),
    Hostile("invalid utf-8 in id", "GET", "/v1/accounts/%FF%FE"),
    Hostile("encoded slash in id", "GET", "/v1/accounts/..%2F..%2Fetc"),
    Hostile(
        "license id of 500 characters",
        "POST",
        "/v1/accounts/{a}/licenses/" + "l" * 500 + "/play",
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile("title id of 129 characters", "GET", "/v1/titles/" + "t" * 129, status=422, code="VALIDATION_ERROR"),
    # bodies
    Hostile(
        "account id of 129 characters",
        "POST",
        "/v1/accounts",
        {"json": {"account_id": "x" * 129, "plan": "basic"}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "unicode account id",
        "POST",
        "/v1/accounts",
        {"json": {"account_id": "ünï", "plan": "basic"}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "null byte in account id",
        "POST",
        "/v1/accounts",
        {"json": {"account_id": "a\u0000b", "plan": "basic"}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "null byte in plan",
        "POST",
        "/v1/accounts",
        {"json": {"account_id": "nul-plan", "plan": "ba\u0000sic"}},
        status=422,
        code="VALIDATION_ERROR",  # free text holds no control characters
    ),
    Hostile(
        "lone surrogate in plan",
        "POST",
        "/v1/accounts",
        raw(b'{"account_id": "s1", "plan": "\\ud800"}'),
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "lone surrogate in model",
        "POST",
        "/v1/accounts/{a}/devices",
        raw(b'{"device_id": "s1", "model": "\\udfff"}'),
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile("array nested 30000 deep", "POST", "/v1/accounts", raw(b"[" * 30_000 + b"]" * 30_000), status=400),
    Hostile(
        "object nested 5000 deep",
        "POST",
        "/v1/accounts/{a}/devices",
        raw(b'{"device_id": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_001),
        status=400,
    ),
    Hostile(
        "nested value",
        "POST",
        "/v1/accounts/{a}/licenses",
        {"json": {"device_id": {"$ne": None}, "title_id": [["demo-title-1"]]}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "integer of 5000 digits",
        "POST",
        "/v1/accounts",
        raw(b'{"account_id": "x", "plan": ' + b"9" * 5000 + b"}"),
        status=400,
    ),
    Hostile(
        "number too large for a float",
        "POST",
        "/v1/accounts",
        raw(b'{"account_id": "x", "plan": 1e400}'),
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile("NaN", "PUT", "/v1/accounts/{a}/plan", raw(b'{"plan": NaN}'), status=422, code="VALIDATION_ERROR"),
    Hostile(
        "invalid utf-8 in body", "POST", "/v1/accounts", raw(b'{"account_id": "x\xff", "plan": "basic"}'), status=400
    ),
    Hostile("not JSON", "POST", "/v1/accounts", raw(b"{'account_id': 1"), status=422, code="VALIDATION_ERROR"),
    Hostile("JSON array", "POST", "/v1/accounts", {"json": [1, 2]}, status=422, code="VALIDATION_ERROR"),
    Hostile("JSON null", "POST", "/v1/accounts/{a}/devices", raw(b"null"), status=422, code="VALIDATION_ERROR"),
    Hostile("empty body", "POST", "/v1/accounts", raw(b""), status=422, code="VALIDATION_ERROR"),
    Hostile(
        "form body",
        "POST",
        "/v1/accounts",
        {"data": {"account_id": "x", "plan": "basic"}},
        status=415,
        code="UNSUPPORTED_MEDIA_TYPE",
    ),
    Hostile(
        "body over the size limit",
        "POST",
        "/v1/accounts",
        {"json": {"account_id": "x", "plan": "p" * 70_000}},
        status=413,
        code="PAYLOAD_TOO_LARGE",
    ),
    Hostile(
        "chunked body over the size limit",
        "POST",
        "/v1/accounts/{a}/devices",
        {"content": big_stream(), "headers": JSON},
        status=413,
        code="PAYLOAD_TOO_LARGE",
    ),
    Hostile(
        "model of 201 characters",
        "POST",
        "/v1/accounts/{a}/devices",
        {"json": {"device_id": "long", "model": "m" * 201}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "1001 license ids",
        "POST",
        "/v1/accounts/{a}/devices/d1/sync",
        {"json": {"license_ids": ["x"] * 1001}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "bad license id in sync",
        "POST",
        "/v1/accounts/{a}/devices/d1/sync",
        {"json": {"license_ids": ["ok", "bad id"]}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "available_until past year 9999 in UTC",
        "PUT",
        "/v1/titles/hostile-title",
        {"json": {"studio": "default", "available_until": "9999-12-31T23:59:59-14:00"}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "available_until before year 1 in UTC",
        "PUT",
        "/v1/titles/hostile-title",
        {"json": {"studio": "default", "available_until": "0001-01-01T00:00:00+14:00"}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "available_until garbage",
        "PUT",
        "/v1/titles/hostile-title",
        {"json": {"studio": "default", "available_until": "next tuesday"}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "downloadable as a string",
        "PUT",
        "/v1/titles/hostile-title",
        {"json": {"studio": "default", "downloadable": "yes"}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "null byte in studio",
        "PUT",
        "/v1/titles/hostile-title",
        {"json": {"studio": "def\u0000ault"}},
        status=422,
        code="VALIDATION_ERROR",  # free text holds no control characters
    ),
    # query parameters
    *[
        Hostile(
            f"events {name}={value}",
            "GET",
            "/v1/accounts/{a}/events",
            {"params": {name: value}},
            status=422,
            code="INVALID_CURSOR" if name == "after" else "VALIDATION_ERROR",
        )
        for name, value in [
            ("after", -1),
            ("after", 2**62 + 1),
            ("after", 10**30),
            ("after", "1e3"),
            ("after", "x"),
            ("limit", 0),
            ("limit", 1001),
            ("limit", -5),
            ("limit", 10**30),
            ("limit", "1.5"),
            ("limit", "NaN"),
        ]
    ],
    *[
        Hostile(
            f"version={value}",
            "GET",
            "/v1/accounts/{a}",
            {"params": {"version": value}},
            status=422,
            code="VALIDATION_ERROR",
        )
        for value in [0, -1, 2**63, 10**40, "1.5", "latest"]
    ],
    *[
        Hostile(
            f"as_of={value!r}",
            "GET",
            "/v1/accounts/{a}",
            {"params": {"as_of": value}},
            status=422,
            code="VALIDATION_ERROR",
        )
        for value in [
            "yesterday",
            "2024-13-45",
            "0000-01-01",
            "0001-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "1e100",
            "99999999999999999999",
            "2024-01-01T00:00:00+25:00",
            "99999-01-01",
            "\x00",
            "-1",
        ]
    ],
    Hostile(
        "unknown license status",
        "GET",
        "/v1/accounts/{a}/licenses",
        {"params": {"status": "stolen"}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "unicode device filter",
        "GET",
        "/v1/accounts/{a}/licenses",
        {"params": {"device_id": "ü"}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    # headers
    Hostile(
        "idempotency key of 201 characters",
        "POST",
        "/v1/accounts/{a}/devices",
        {"json": {"device_id": "k", "model": "m"}, "headers": {"Idempotency-Key": "k" * 201}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "idempotency key in latin-1",
        "POST",
        "/v1/accounts/{a}/devices",
        {"json": {"device_id": "k", "model": "m"}, "headers": {"Idempotency-Key": "kä".encode("latin-1")}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "idempotency key with a space",
        "POST",
        "/v1/accounts/{a}/devices",
        {"json": {"device_id": "k", "model": "m"}, "headers": {"X-Request-Id": "a b"}},
        status=422,
        code="VALIDATION_ERROR",
    ),
    Hostile(
        "garbage token",
        "GET",
        "/v1/accounts/{a}",
        {"headers": {"Authorization": "Bearer garbage"}},
        status=401,
        code="UNAUTHENTICATED",
        role="",
    ),
    Hostile(
        "token in latin-1",
        "GET",
        "/v1/accounts/{a}",
        {"headers": {"Authorization": "Bearer é".encode("latin-1")}},
        status=401,
        code="UNAUTHENTICATED",
        role="",
    ),
    Hostile(
        "unsigned token",
        "GET",
        "/v1/accounts/{a}",
        {"headers": {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJyb2xlIjoiYWRtaW4iLCJleHAiOjk5OTk5OTk5OTl9."}},
        status=401,
        code="UNAUTHENTICATED",
        role="",
    ),
    Hostile(
        "basic auth",
        "GET",
        "/v1/accounts/{a}",
        {"headers": {"Authorization": "Basic YTpi"}},
        status=401,
        code="UNAUTHENTICATED",
        role="",
    ),
    Hostile(
        "support role closing an account",
        "POST",
        "/v1/accounts/{a}/close",
        status=403,
        code="FORBIDDEN",
        role="support",
    ),
    Hostile(
        "service role writing the catalog",
        "PUT",
        "/v1/titles/hostile-title",
        {"json": {"studio": "default"}},
        status=403,
        code="FORBIDDEN",
        role="service",
    ),
    # routes
    Hostile("unknown route", "GET", "/v1/nothing-here", status=404, code="NOT_FOUND"),
    Hostile("wrong method", "PATCH", "/v1/accounts/{a}", status=405, code="METHOD_NOT_ALLOWED"),
]


@pytest.fixture(scope="module")
def target(fuzz_server: Server) -> dict[str, str]:
    """An account with a device and a license, that hostile requests aim at."""
    with fuzz_server.client("admin") as http:
        assert http.post("/v1/accounts", json={"account_id": TARGET, "plan": "premium"}).status_code == 201
        assert http.post(f"/v1/accounts/{TARGET}/devices", json={"device_id": "d1", "model": "tv"}).status_code == 201
        issued = http.post(f"/v1/accounts/{TARGET}/licenses", json={"device_id": "d1", "title_id": "demo-title-1"})
        assert issued.status_code == 201, issued.text
    return {"a": TARGET, "l": issued.json()["license_id"]}


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h.name)
def test_a_hostile_request_gets_a_4xx_with_the_error_envelope_and_writes_nothing(
    fuzz_server: Server, target: dict[str, str], hostile: Hostile
) -> None:
    with fuzz_server.client("admin") as http, fuzz_server.client(hostile.role or None) as caller:
        before = read_all_events(http, TARGET)
        answer = caller.request(hostile.method, hostile.path.format(**target), **hostile.kwargs)
        assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:500])
        if hostile.status is not None:
            assert answer.status_code == hostile.status, answer.text[:500]
        details = answer.json()["error"]["code"]
        expect_error(answer, answer.status_code, hostile.code or details)
        assert read_all_events(http, TARGET) == before
        for absent in ("x", "s1", "nul-plan"):
            expect_error(http.get(f"/v1/accounts/{absent}"), 404, "ACCOUNT_NOT_FOUND")
        expect_error(http.get("/v1/titles/hostile-title"), 404, "TITLE_NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/v1/accounts/{a}/devices", {"json": {"device_id": "nul-model", "model": "x\u0000y\u202e🙂"}}),
        ("GET", "/v1/accounts/{a}", {"params": {"as_of": "9999-12-31T23:59:59-14:00"}}),
        ("GET", "/v1/accounts/{a}", {"params": {"as_of": "1971-01-01T00:00:00+23:59"}}),
        ("GET", "/v1/accounts/{a}", {"params": {"version": 2**62}}),
        ("GET", "/v1/accounts/{a}/events", {"params": {"after": 2**62, "limit": 1000}}),
        ("PUT", "/v1/titles/edge-title", {"json": {"studio": "default", "available_until": -1}}),
        ("PUT", "/v1/titles/edge-title", {"json": {"studio": "default", "available_until": "0001-01-01T00:00:00Z"}}),
        ("PUT", "/v1/titles/edge-title", {"json": {"studio": "default", "available_until": "9999-12-31T23:59:59Z"}}),
        ("POST", "/v1/accounts/{a}/devices/d1/sync", {"json": {"license_ids": ["dup"] * 1000}}),
    ],
    ids=[
        "odd model text",
        "as_of at the end of time",
        "as_of with a 23:59 offset",
        "version 2**62",
        "after 2**62",
        "available_until as a number",
        "available_until in year 1",
        "available_until in year 9999",
        "1000 copies of one license id",
    ],
)
def test_an_odd_but_well_formed_request_gets_no_server_error_and_the_account_still_reads(
    fuzz_server: Server, target: dict[str, str], method: str, path: str, kwargs: dict[str, Any]
) -> None:
    with fuzz_server.client("admin") as http:
        answer = http.request(method, path.format(**target), **kwargs)
        assert answer.status_code < 500, answer.text[:500]
        if answer.status_code >= 400:
            expect_error(answer, answer.status_code, answer.json()["error"]["code"])
        assert http.get(f"/v1/accounts/{TARGET}").status_code == 200
        events = read_all_events(http, TARGET)
        assert http.get(f"/v1/accounts/{TARGET}", params={"version": len(events)}).status_code == 200
        if path.startswith("/v1/titles/"):
            assert http.get("/v1/titles/edge-title").json() == answer.json()


# -- generated requests ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_generated_requests_get_no_server_error_and_every_4xx_is_the_error_envelope(
    api_schema: Any, fuzz_server: Server, mode: GenerationMode
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    if mode is GenerationMode.NEGATIVE:  # an operation with no input has no invalid input
        operations = [op for op in operations if list(op.iter_parameters()) or list(op.body)]
    failures: list[str] = []
    with requests.Session() as session:  # one connection for every call, not one per request
        session.headers["Authorization"] = f"Bearer {fuzz_server.token('admin')}"
        for operation in operations:

            @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                case.call_and_validate(session=session, timeout=30, checks=[not_a_server_error, error_envelope])

            try:
                fuzz()
            except Exception as exc:  # report every operation's failure, not only the first
                failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


# -- the stateful phase: following links to real accounts ------------------------------------------------------------


def _schema_links(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (source operation, link name) the OpenAPI document declares."""
    return {
        (f"{method.upper()} {path}", name)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        for response in operation.get("responses", {}).values()
        for name in response.get("links", {})
    }


@pytest.mark.slow
def test_the_stateful_phase_follows_the_links_to_real_accounts_and_devices_and_licenses(tmp_path: Path) -> None:
    with running_server(tmp_path) as fuzz_server:  # its own server: the other fuzzing leaves no trace here
        _walk_the_links(fuzz_server)


def _walk_the_links(fuzz_server: Server) -> None:
    declared = _schema_links(requests.get(fuzz_server.url + "/openapi.json", timeout=30).json())
    assert len(declared) >= 15, declared
    followed: set[tuple[str, str]] = set()
    statuses: dict[int, int] = {}
    failures: list[str] = []
    auth = {"Authorization": f"Bearer {fuzz_server.token('admin')}"}

    def machine(suite: int) -> Any:
        """A state machine steered to fresh seeded accounts (earlier suites fill up the old ones' limits)."""
        api_schema = _steered_schema(fuzz_server, _seed(fuzz_server, f"-s{suite}"))
        api_schema.config.phases.stateful.inference.algorithms = []  # the links the document declares, only
        api_schema.config.phases.stateful.generation.modes = [GenerationMode.POSITIVE]  # valid ones walk further
        return api_schema.as_state_machine()

    class Probe:
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": auth, "timeout": 30}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            try:
                case.validate_response(response, checks=[not_a_server_error, error_envelope], transport_kwargs=kwargs)
            except Exception as exc:  # collected, not raised: a replay against a server that moved on is not the same
                failures.append(f"{case.operation.label}: {exc}")

        def step(self, input: Any) -> Any:
            output = super().step(input)
            transition = input.transition
            if transition is not None and not transition.is_inferred and input.is_applied:
                # "POST /v1/accounts -> [201] GetAccount -> GET /v1/accounts/{account_id}"
                found = re.match(r"^(.+?) -> \[\d+\] (\w+) -> ", transition.id)
                if found is not None and output.response.status_code < 400:
                    followed.add((found.group(1), found.group(2)))
            return output

    # Scenarios run against a server whose state they change, so Hypothesis may find a draw behave
    # differently the second time and stop a suite as flaky; like schemathesis' own runner, start
    # another suite then. Bounded in suites and in time.
    started = time.monotonic()
    suites = 0
    for suite in range(40):
        suites += 1
        Machine = type("Machine", (Probe, machine(suite)), {})
        with contextlib.suppress(Flaky):
            hypothesis.seed(suite)(Machine).run(
                settings=settings(
                    max_examples=100,
                    stateful_step_count=10,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],  # no replay or shrinking: the server's state is in every scenario
                    suppress_health_check=list(HealthCheck),
                )
            )
        if len(followed & declared) >= 0.85 * len(declared) or time.monotonic() - started > 240:
            break

    took = time.monotonic() - started
    print(f"links followed with a 2xx answer: {len(followed)} of {len(declared)} in {suites} suites, {took:.0f} s")
    print(f"statuses: {sorted(statuses.items())}")
    assert not failures, "\n\n".join(failures[:10])
    assert not statuses.keys() & set(range(500, 600))
    print("not followed:", sorted(declared - followed))
    assert len(followed & declared) >= 0.8 * len(declared), sorted(declared - followed)
