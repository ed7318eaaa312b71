"""Bearer tokens: lifetimes capped per role, rotation with a previous secret, dev tokens kept private (issue 8)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.downloads.e2e.test_api_cli import _downloads
from tests.support.server import SECRET, Server, expect_error, free_port, running_server, unique_id

OLD_SECRET = "the-previous-secret-" + "p" * 32


def _token(claims: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _status(server: Server, token: str) -> int:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        return http.get(f"/v1/accounts/{unique_id()}").status_code


@pytest.fixture(scope="module")
def rotating_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    tmp = tmp_path_factory.mktemp("tokens")
    with running_server(tmp, env={"DOWNLOADS_AUTH_PREVIOUS_SECRET": OLD_SECRET}) as server:
        yield server


def test_a_token_living_longer_than_its_role_allows_is_refused(rotating_server: Server) -> None:
    now = int(time.time())
    days = {n: {"iat": now, "exp": now + n * 86400, "sub": "t"} for n in (2, 8)}
    assert _status(rotating_server, _token({**days[8], "role": "service"})) == 404  # service: up to 30 days
    assert _status(rotating_server, _token({**days[2], "role": "support"})) == 404  # support: up to 7 days
    for role, lifetime in (("admin", 2), ("support", 8)):  # admin: up to 24 hours
        token = _token({**days[lifetime], "role": role})
        with httpx.Client(base_url=rotating_server.url, headers={"Authorization": f"Bearer {token}"}) as http:
            expect_error(http.get(f"/v1/accounts/{unique_id()}"), 401, "UNAUTHENTICATED")
    assert _status(rotating_server, _token({"role": "admin", "exp": now + 3600, "sub": "t"})) == 401  # no iat


@pytest.mark.parametrize(
    "exp", [10**400, 2**63, -(2**70), "soon", 1.5e308], ids=["10**400", "2**63", "-2**70", "text", "1.5e308"]
)
def test_a_correctly_signed_token_with_absurd_claims_is_401_not_500(rotating_server: Server, exp: object) -> None:
    token = _token({"role": "admin", "iat": int(time.time()), "exp": exp, "sub": "t"})
    assert _status(rotating_server, token) == 401


def test_tokens_signed_with_the_previous_secret_still_work_until_it_is_dropped(rotating_server: Server) -> None:
    now = int(time.time())
    claims = {"role": "service", "iat": now, "exp": now + 600, "sub": "t"}
    assert _status(rotating_server, _token(claims, OLD_SECRET)) == 404
    assert _status(rotating_server, _token(claims, "a-secret-nobody-configured-" + "n" * 32)) == 401


@pytest.mark.parametrize(
    ("ttl", "role"), [("99999999d", "admin"), ("99999999999d", "admin"), ("0s", "service"), ("25h", "admin")]
)
def test_the_token_command_refuses_a_lifetime_its_role_does_not_allow(ttl: str, role: str) -> None:
    result = _downloads("token", "--role", role, "--ttl", ttl, env={"DOWNLOADS_AUTH_SECRET": SECRET})
    assert result.returncode == 1
    assert "--ttl" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_the_token_command_issues_a_token_within_the_cap() -> None:
    result = _downloads("token", "--role", "admin", "--ttl", "24h", env={"DOWNLOADS_AUTH_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 24 * 3600 and claims["role"] == "admin"


def test_serve_without_a_secret_keeps_its_dev_tokens_out_of_logs(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNLOADS_")}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:  # stderr is a file, as under a process manager: not a terminal
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "downloads.entrypoints.cli",
                "serve",
                "--port",
                str(port),
                "--store",
                f"sqlite:///{tmp_path}/d.db",
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        tokens = tmp_path / "downloads-dev-tokens.txt"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tokens.exists() and "admin" in tokens.read_text()):
            time.sleep(0.1)
        assert tokens.exists(), log.read_text()
        assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
        admin = next(line.split()[-1] for line in tokens.read_text().splitlines() if line.startswith("admin"))
        written = log.read_text()
        assert admin not in written and "eyJ" not in written
        assert str(tokens) in written  # says where to find them
    finally:
        process.terminate()
        process.wait(timeout=20)
