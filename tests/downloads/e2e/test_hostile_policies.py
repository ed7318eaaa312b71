"""Hostile policies and oversized what-if requests against the real server and the real command line.

Before the bounds, one 32 KB what-if policy (a dotted key of 16,300 parts) cost the worker about
6 s of CPU and left it 700 MB larger, and a dotted key 5,000 deep was a 500 over HTTP and a
traceback in ``downloads what-if --policy`` and ``downloads serve --policy``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import SECRET, Server, expect_error, free_port, running_server, unique_id

MIB = 1024 * 1024

#: the issue's policy: one table, then one dotted key of 16,300 parts (32 KB)
LONG_KEY = "[studios.s]\n" + ".".join(["a"] * 16_300) + " = 1\n"
#: a dotted key 5,000 deep where a value is expected: printing the nested value recursed past the limit
DEEP_KEY = "[titles.t]\nstudio." + ".".join(["a"] * 5000) + " = 1\n"


@pytest.fixture(scope="module")
def small_what_if(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose what-if re-decides at most four commands per request."""
    tmp_path = tmp_path_factory.mktemp("small-what-if")
    with running_server(tmp_path, env={"DOWNLOADS_WHAT_IF_MAX_COMMANDS": "4"}) as running:
        yield running


def _group_rss(server: Server) -> int:
    """Resident bytes (``VmRSS``) of the server's process group: the server and its worker."""
    assert server.process is not None
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != server.process.pid:
                continue
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except (OSError, ProcessLookupError):
            continue
    return total


def _account_with_a_license(http: httpx.Client) -> str:
    account = unique_id()
    http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).raise_for_status()
    http.post(f"/v1/accounts/{account}/devices", json={"device_id": "d1", "model": "m"}).raise_for_status()
    http.post(
        f"/v1/accounts/{account}/licenses", json={"device_id": "d1", "title_id": "demo-title-1"}
    ).raise_for_status()
    return account


def test_the_issue_s_32_kb_policy_is_refused_without_growing_the_worker(shared_server: Server) -> None:
    assert len(LONG_KEY) <= 32_768  # what a what-if request may carry
    with shared_server.client() as http:
        account = _account_with_a_license(http)
    with shared_server.client(role="support") as http:
        # warm the worker's paths (an answer, a refusal) so that what follows measures the policy alone
        assert http.post(f"/v1/accounts/{account}/what-if", json={"policy": ""}).status_code == 200
        expect_error(http.post(f"/v1/accounts/{account}/what-if", json={"policy": "[a\n"}), 422, "INVALID_POLICY")
        before = _group_rss(shared_server)

        answer = http.post(f"/v1/accounts/{account}/what-if", json={"policy": LONG_KEY})

        grown = _group_rss(shared_server) - before
    assert grown < 8 * MIB, f"the worker grew by {grown / MIB:.1f} MiB"
    expect_error(answer, 422, "INVALID_POLICY")
    assert "8 parts" in answer.json()["error"]["message"]


def test_a_key_5000_deep_is_a_422_over_http(shared_server: Server) -> None:
    with shared_server.client() as http:
        account = _account_with_a_license(http)
    with shared_server.client(role="support") as http:
        answer = http.post(f"/v1/accounts/{account}/what-if", json={"policy": DEEP_KEY})
        details = expect_error(answer, 422, "INVALID_POLICY")
        assert details == {}
        assert len(answer.json()["error"]["message"]) < 300
        assert http.get("/healthz").status_code == 200


def _downloads(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DOWNLOADS_")}, **(env or {})}
    env["DOWNLOADS_AUTH_SECRET"] = SECRET
    return subprocess.run(
        [sys.executable, "-m", "downloads.entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("policy", [DEEP_KEY, LONG_KEY, "a = " + "[" * 5000 + "]" * 5000 + "\n"])
def test_a_hostile_policy_file_is_a_policy_error_and_exit_2_in_what_if(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "hostile.toml"
    path.write_text(policy)

    result = _downloads("what-if", "--policy", str(path), "--store", f"sqlite:///{tmp_path / 'x.db'}")

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("PolicyError: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(result.stderr) < 500


@pytest.mark.parametrize("policy", [DEEP_KEY, LONG_KEY])
def test_serve_with_a_hostile_policy_exits_at_once_with_a_policy_error(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "hostile.toml"
    path.write_text(policy)

    result = _downloads(
        "serve",
        "--policy",
        str(path),
        "--store",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--port",
        str(free_port()),
        timeout=30,  # a server that started anyway is a failure, not a hang
    )

    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("PolicyError: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_what_if_past_its_command_bound_is_a_422_that_says_how_to_narrow_it(small_what_if: Server) -> None:
    with small_what_if.client() as http:
        account = _account_with_a_license(http)  # three commands
        lic = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d1", "title_id": "demo-title-2"})
        lic.raise_for_status()
        http.delete(f"/v1/accounts/{account}/licenses/{lic.json()['license_id']}").raise_for_status()
        http.post(f"/v1/accounts/{account}/devices", json={"device_id": "d2", "model": "m"}).raise_for_status()
    strict = "[plans.basic]\ndownload_devices = 0\n"
    with small_what_if.client(role="support") as http:
        refused = http.post(f"/v1/accounts/{account}/what-if", json={"policy": strict})
        details = expect_error(refused, 422, "WHAT_IF_TOO_LARGE")
        message = refused.json()["error"]["message"]
        assert details["limit"] == 4 and details["commands"] >= 5
        assert '"from"' in message and '"to"' in message
        narrowed = http.post(f"/v1/accounts/{account}/what-if", json={"policy": strict, "to": details["to"]})
        assert narrowed.status_code == 200, narrowed.text
        assert narrowed.json()["changed"] >= 1
        rest = http.post(f"/v1/accounts/{account}/what-if", json={"policy": strict, "from": details["to"]})
        assert rest.status_code == 200, rest.text


def test_the_what_if_command_bounds_one_account_but_not_the_summary(tmp_path: Path) -> None:
    from downloads.application import AcquireLicense, OpenAccount, RegisterDevice
    from downloads.bootstrap import bootstrap
    from downloads.settings import Settings

    store = f"sqlite:///{tmp_path / 'downloads.db'}"
    app = bootstrap(Settings(store=store))
    try:
        for n in range(3):
            app.service.handle(OpenAccount(f"acct-{n}", "basic"))
            app.service.handle(RegisterDevice(f"acct-{n}", "d1", "phone"))
            app.service.handle(AcquireLicense(f"acct-{n}", "d1", "demo-title-1"))
    finally:
        app.close()
    policy = tmp_path / "strict.toml"
    policy.write_text("[plans.basic]\ndownload_devices = 0\n")
    small = {"DOWNLOADS_WHAT_IF_MAX_COMMANDS": "2"}

    one = _downloads("what-if", "--policy", str(policy), "acct-1", "--store", store, env=small)
    fleet = _downloads("what-if", "--policy", str(policy), "--store", store, env=small)

    assert one.returncode == 1, one.stderr
    assert one.stderr.startswith("Invalid: WHAT_IF_TOO_LARGE: this what-if would re-decide 3 commands"), one.stderr
    assert '"from" and "to"' in one.stderr and "Traceback" not in one.stderr
    assert fleet.returncode == 0, fleet.stderr
    assert "3 accounts, 9 commands re-decided" in fleet.stdout and "3 decisions would change" in fleet.stdout
