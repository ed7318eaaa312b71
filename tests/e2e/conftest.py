from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Server, running_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A real server process on a temporary SQLite file."""
    with running_server(tmp_path) as running:
        yield running


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for a whole test module (tests use their own account ids)."""
    with running_server(tmp_path_factory.mktemp("shared-server")) as running:
        yield running


#: a policy with a tight per-device download limit and a studio whose licenses last two seconds
STRICT_POLICY = """
[devices]
max_active_downloads = 2

[studios.default]

[studios.restricted]
max_downloads_per_title = 3

[studios.short]
license_duration = "2s"
"""


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for a module, running :data:`STRICT_POLICY`."""
    tmp_path = tmp_path_factory.mktemp("strict-server")
    policy = tmp_path / "policy.toml"
    policy.write_text(STRICT_POLICY)
    with running_server(tmp_path, policy=policy) as running:
        yield running
