"""The ``downloads`` command line against a real server and a real store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from downloads.application import OpenAccount, RegisterDevice
from tests.support.server import SECRET, Server, expect_error, free_port, unique_id


def _downloads(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``downloads`` command (or the module when the script is missing)."""
    script = Path(sys.executable).parent / "downloads"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "downloads.entrypoints.cli"]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNLOADS_")}
    full_env.update(env or {})
    return subprocess.run(
        [*command, *args], env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_token_prints_a_token_the_server_accepts_for_its_role(shared_server: Server) -> None:
    printed = _downloads("token", "--role", "support", env={"DOWNLOADS_AUTH_SECRET": SECRET})
    assert printed.returncode == 0, printed.stderr
    token = printed.stdout.strip()
    assert token.count(".") == 2
    with httpx.Client(base_url=shared_server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        expect_error(http.get(f"/v1/accounts/{unique_id()}"), 404, "ACCOUNT_NOT_FOUND")
        expect_error(http.post("/v1/accounts", json={"account_id": unique_id(), "plan": "basic"}), 403, "FORBIDDEN")

    other = _downloads("token", "--role", "admin", env={"DOWNLOADS_AUTH_SECRET": "another-secret-" + "z" * 32})
    assert other.returncode == 0, other.stderr
    with httpx.Client(base_url=shared_server.url, headers={"Authorization": f"Bearer {other.stdout.strip()}"}) as http:
        expect_error(http.get("/v1/titles/demo-title-1"), 401, "UNAUTHENTICATED")


def test_token_without_a_secret_is_an_error_not_a_traceback() -> None:
    result = _downloads("token", "--role", "admin")
    assert result.returncode != 0
    assert result.stderr.startswith("UsageError: ")
    assert "Traceback" not in result.stderr


def test_history_prints_the_timeline_of_a_running_servers_store(shared_server: Server) -> None:
    account = unique_id()
    with shared_server.client() as http:
        http.post("/v1/accounts", json={"account_id": account, "plan": "standard"}).raise_for_status()
        http.post(f"/v1/accounts/{account}/devices", json={"device_id": "phone-1", "model": "m"}).raise_for_status()
        lic = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "phone-1", "title_id": "demo-title-1"})
        lic.raise_for_status()
        events = http.get(f"/v1/accounts/{account}/events").json()["events"]

    result = _downloads("history", account, "--store", shared_server.store)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for event in events:
        assert event["type"] in out
    assert out.index("AccountOpened") < out.index("DeviceRegistered") < out.index("LicenseIssued")
    assert "phone-1" in out
    assert account in out
    assert "plan=standard" in out
    assert "version=3" in out

    # As of the account's first event: only that event, and the state then.
    first_at = events[0]["recorded_at"]
    early = _downloads("history", account, "--as-of", first_at, "--store", shared_server.store)
    assert early.returncode == 0, early.stderr
    assert "AccountOpened" in early.stdout
    assert "LicenseIssued" not in early.stdout
    assert "version=1" in early.stdout

    missing = _downloads("history", unique_id(), "--store", shared_server.store)
    assert missing.returncode != 0
    assert missing.stderr.startswith("NotFound: ACCOUNT_NOT_FOUND: ")
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(
    ("policy", "key"),
    [
        ('[plans.basic]\ndownload_devices = "two"\n', "plans.basic.download_devices"),
        ("[devices]\nmax_active = 3\n", "devices.max_active"),
        ('[studios.default]\nlicense_duration = "30 days"\n', "studios.default.license_duration"),
        ('[titles.t1]\nstudio = "nobody"\n', "titles.t1.studio"),
        ("[plans.basic\n", "not valid TOML"),
    ],
)
def test_serve_with_a_bad_policy_exits_with_an_error_naming_the_key(tmp_path: Path, policy: str, key: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(policy)
    result = _downloads(
        "serve",
        "--policy",
        str(bad),
        "--store",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--port",
        str(free_port()),
        env={"DOWNLOADS_AUTH_SECRET": SECRET},
        timeout=30,
    )
    assert result.returncode != 0
    assert "PolicyError: " in result.stderr
    assert key in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_a_missing_policy_file_exits_with_an_error(tmp_path: Path) -> None:
    result = _downloads(
        "serve",
        "--policy",
        str(tmp_path / "absent.toml"),
        "--store",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--port",
        str(free_port()),
        env={"DOWNLOADS_AUTH_SECRET": SECRET},
        timeout=30,
    )
    assert result.returncode != 0
    assert result.stderr.startswith("PolicyError: ")
    assert "absent.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_store_init_creates_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    result = _downloads("store", "init", "--store", f"sqlite:///{path}")
    assert result.returncode == 0, result.stderr
    assert path.is_file()
    assert path.stat().st_size > 0

    # Relative paths are relative to the working directory; the environment variable works too.
    relative = _downloads("store", "init", env={"DOWNLOADS_STORE": "sqlite:///rel.db"}, cwd=tmp_path)
    assert relative.returncode == 0, relative.stderr
    assert (tmp_path / "rel.db").is_file()


HOSTILE_MODEL = "x\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\r\n     9  2030-01-01T00:00:00Z  AccountClosed\u202e"


def test_free_text_with_control_or_format_characters_is_refused_by_the_api(shared_server: Server) -> None:
    account = unique_id()
    with shared_server.client() as http:
        http.post("/v1/accounts", json={"account_id": account, "plan": "standard"}).raise_for_status()
        for model in (HOSTILE_MODEL, "tab\there", "bidi\u202eoverride", "zero\u200bwidth"):
            refused = http.post(f"/v1/accounts/{account}/devices", json={"device_id": "d1", "model": model})
            expect_error(refused, 422, "VALIDATION_ERROR")
        fine = "Pixel 9 \u2013 \u00dcn\u00efcode \u2713"  # letters and symbols of any script are fine
        ok = http.post(f"/v1/accounts/{account}/devices", json={"device_id": "d1", "model": fine})
        assert ok.status_code == 201, ok.text


def test_history_escapes_whatever_it_prints_that_is_not_printable(tmp_path: Path) -> None:
    # A store written before free text was checked may hold anything: write one through the service.
    from downloads.bootstrap import bootstrap
    from downloads.settings import Settings

    store = f"sqlite:///{tmp_path / 'old.db'}"
    app = bootstrap(Settings(store=store))
    try:
        app.service.handle(OpenAccount("acct-1", "standard"))
        app.service.handle(RegisterDevice("acct-1", "d1", HOSTILE_MODEL))
    finally:
        app.close()

    result = _downloads("history", "acct-1", "--store", store)

    assert result.returncode == 0, result.stderr
    assert not any((ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F for c in result.stdout)
    assert "\u202e" not in result.stdout
    assert "\\x1b[2J" in result.stdout and "\\u202e" in result.stdout
    # Two events, a blank line, the account and its device: the forged line stayed inside the model.
    assert result.stdout.count("\n") == 5


def test_history_on_a_mistyped_sqlite_path_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"

    result = _downloads("history", "acct-1", "--store", f"sqlite:///{missing}")

    assert result.returncode == 1
    assert result.stderr.startswith("StoreUnavailable: ") and "Traceback" not in result.stderr
    assert not missing.exists()


def test_history_as_of_a_time_with_no_utc_form_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'h.db'}"
    assert _downloads("store", "init", "--store", store).returncode == 0

    result = _downloads("history", "acct-1", "--as-of", "9999-12-31T23:59:59-14:00", "--store", store)

    assert result.returncode == 1
    assert result.stderr.startswith("UsageError: ") and "Traceback" not in result.stderr


def test_history_filters_by_type_and_time_and_lists_denials(tmp_path: Path) -> None:
    from downloads.application import AcquireLicense
    from downloads.bootstrap import bootstrap
    from downloads.domain import DomainError
    from downloads.settings import Settings

    store = f"sqlite:///{tmp_path / 'downloads.db'}"
    app = bootstrap(Settings(store=store))
    try:
        app.service.handle(OpenAccount("acct-1", "basic"))
        for device in ("d1", "d2"):
            app.service.handle(RegisterDevice("acct-1", device, "phone"))
        app.service.handle(AcquireLicense("acct-1", "d1", "demo-title-1"))
        with pytest.raises(DomainError):
            app.service.handle(AcquireLicense("acct-1", "d2", "demo-title-1"), idempotency_key="denied-1")
    finally:
        app.close()

    only = _downloads("history", "acct-1", "--type", "DeviceRegistered", "--store", store)
    assert only.returncode == 0, only.stderr
    timeline = only.stdout.split("\n\n")[0].splitlines()
    assert len(timeline) == 2 and all("DeviceRegistered" in line for line in timeline)
    assert "denied" not in only.stdout

    later = _downloads("history", "acct-1", "--from", "2999-01-01T00:00:00Z", "--store", store)
    assert later.returncode == 0 and later.stdout.startswith("\n"), later.stdout  # no event that late

    with_denials = _downloads("history", "acct-1", "--denials", "--store", store)
    assert with_denials.returncode == 0, with_denials.stderr
    denials = with_denials.stdout.split("denied commands (newest first):\n")[1].splitlines()
    assert len(denials) == 1
    assert "acquire_license" in denials[0] and "device_id=d2" in denials[0]
    assert "DEVICE_LIMIT_REACHED" in denials[0]


def test_what_if_prints_an_account_s_changes_and_a_fleet_summary(tmp_path: Path) -> None:
    from downloads.application import AcquireLicense
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

    one = _downloads("what-if", "--policy", str(policy), "acct-1", "--store", store)
    assert one.returncode == 0, one.stderr
    assert "account acct-1: 1 of 3 decisions change" in one.stdout
    assert "acquire_license  device_id=d1 title_id=demo-title-1: accepted -> DEVICE_LIMIT_REACHED" in one.stdout

    fleet = _downloads("what-if", "--policy", str(policy), "--store", store)
    assert fleet.returncode == 0, fleet.stderr
    assert "3 accounts, 9 commands re-decided" in fleet.stdout and "3 decisions would change" in fleet.stdout
    assert "re-deciding" in fleet.stderr  # progress
    row = next(line for line in fleet.stdout.splitlines() if "DEVICE_LIMIT_REACHED" in line)
    assert row.split()[:4] == ["3", "acquire_license", "accepted", "DEVICE_LIMIT_REACHED"]
