"""Real servers for the end-to-end tests, on SQLite and, for the modules that ask, on Cassandra too.

A module that sets ``ON_CASSANDRA = True`` runs each of its tests twice: with the
server's store on a SQLite file, and on a fresh keyspace of the 3-node cluster
(those runs are marked ``cassandra``; the keyspace is dropped afterwards, and the server runs its
background read side there only when the module also sets ``READ_SIDE = True``). Every other
module runs on SQLite only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from tests.support.cassandra import MASTER_KEY, ClusterPool, keyspace_url
from tests.support.server import Server, running_server

SERVER_FIXTURES = ("server", "shared_server", "strict_server")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    backends: list[object] = ["sqlite"]
    if getattr(metafunc.module, "ON_CASSANDRA", False):
        backends.append(pytest.param("cassandra", marks=[pytest.mark.cassandra, pytest.mark.cluster(nodes=3)]))
    metafunc.parametrize("backend", backends, scope="module")


def start_server(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    *,
    workers: int = 1,
    policy: Path | None = None,
) -> AbstractContextManager[Server]:
    """A real ``downloads serve`` on a fresh SQLite file, or on a fresh keyspace of the 3-node cluster."""
    if backend == "sqlite":
        return running_server(tmp_path, workers=workers, policy=policy)
    pool: ClusterPool = request.getfixturevalue("cluster_pool")
    return _on_cassandra(
        pool, tmp_path, workers=workers, policy=policy, read_side=getattr(request.module, "READ_SIDE", None)
    )


@contextmanager
def _on_cassandra(
    pool: ClusterPool, tmp_path: Path, *, workers: int, policy: Path | None, read_side: bool | None
) -> Iterator[Server]:
    """A server on a fresh keyspace of the 3-node cluster, the keyspace dropped afterwards."""
    with (
        keyspace_url(pool.get(3), "api") as store,
        running_server(
            tmp_path,
            store=store,
            workers=workers,
            policy=policy,
            read_side=read_side,
            env={"DOWNLOADS_MASTER_KEY": MASTER_KEY},  # a Cassandra store is production mode
        ) as running,
    ):
        yield running


@pytest.fixture
def server(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A real server process of its own."""
    with start_server(backend, request, tmp_path) as running:
        yield running


@pytest.fixture(scope="module")
def shared_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One real server for a whole test module (tests use their own account ids)."""
    with start_server(backend, request, tmp_path_factory.mktemp("shared-server")) as running:
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
def strict_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One real server for a module, running :data:`STRICT_POLICY`."""
    tmp_path = tmp_path_factory.mktemp("strict-server")
    policy = tmp_path / "policy.toml"
    policy.write_text(STRICT_POLICY)
    with start_server(backend, request, tmp_path, policy=policy) as running:
        yield running
