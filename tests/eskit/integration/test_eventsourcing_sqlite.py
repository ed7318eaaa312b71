"""The eventsourcing library's own test cases, unchanged, against eskit's SQLite store (a file).

Every case class of the library's ``tests/persistence.py`` and ``tests/application.py`` that a
persistence module can run is bound here to ``eskit.interop.eventsourcing`` on a fresh SQLite
file per test. None is skipped on SQLite: its feed numbers notifications contiguously in commit
order (``EXPECT_CONTIGUOUS_NOTIFICATION_IDS`` keeps its default, True), and the library's
optional subscription case runs too. The cases come from the installed library (the version
the ``eventsourcing`` extra pins), not from a copy.
"""

from __future__ import annotations

import os
import tempfile
from itertools import count

import pytest
from eventsourcing import persistence as es
from eventsourcing.tests import application as application_cases
from eventsourcing.tests import persistence as cases
from eventsourcing.utils import Environment

from eskit.interop.eventsourcing import (
    Factory,
    SnapshotRecorder,
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteProcessRecorder,
    SQLiteTrackingRecorder,
)

# The project runs tests with warnings as errors; the library's case for its deprecated ``log`` records
# that warning with ``catch_warnings(record=True)``, which only works where it is not an error.
pytestmark = pytest.mark.filterwarnings("default:'log' is deprecated:DeprecationWarning")

MODULE = "eskit.interop.eventsourcing"
FACTORY_TOPIC = "eskit.interop.eventsourcing.factory:Factory"


class ViewTrackingRecorder(SQLiteTrackingRecorder):
    """A subclass, as a projection's view would be, for the factory's class-by-topic cases."""


class _FreshStores:
    """Each test gets its own folder, a new SQLite file per recorder, and its factories closed at the end."""

    def setUp(self) -> None:
        self.prepare_folder()
        super().setUp()  # type: ignore[misc]

    def prepare_folder(self) -> None:
        folder = tempfile.TemporaryDirectory(prefix="eskit-es-")
        self.addCleanup(folder.cleanup)  # type: ignore[attr-defined]
        self.folder = folder.name
        self.files = count()
        self.factories: list[Factory] = []
        self.addCleanup(self._close)  # type: ignore[attr-defined]  # runs before the folder goes

    def _close(self) -> None:
        for factory in self.factories:
            factory.close()

    def new_url(self) -> str:
        return f"sqlite:///{self.folder}/store-{next(self.files)}.db"

    def new_factory(self) -> Factory:
        made = Factory({"ESKIT_STORE_URL": self.new_url()})
        self.factories.append(made)
        return made


class _ApplicationsOnEskit(_FreshStores):
    """Applications built by a case find the module and a fresh store in the process environment."""

    def prepare_folder(self) -> None:
        super().prepare_folder()
        saved = {key: os.environ.get(key) for key in ("PERSISTENCE_MODULE", "ESKIT_STORE_URL")}
        os.environ["PERSISTENCE_MODULE"] = MODULE
        os.environ["ESKIT_STORE_URL"] = self.new_url()
        self.addCleanup(self._restore, saved)  # type: ignore[attr-defined]

    @staticmethod
    def _restore(saved: dict[str, str | None]) -> None:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class TestAggregateRecorder(_FreshStores, cases.AggregateRecorderTestCase):
    def create_recorder(self) -> es.AggregateRecorder:
        return self.new_factory().aggregate_recorder()


class TestSnapshotRecorder(_FreshStores, cases.AggregateRecorderTestCase):
    """The library stores snapshots through an aggregate recorder too (``purpose="snapshots"``)."""

    def create_recorder(self) -> es.AggregateRecorder:
        return self.new_factory().aggregate_recorder("snapshots")


class TestApplicationRecorder(_FreshStores, cases.ApplicationRecorderTestCase[es.ApplicationRecorder]):
    def create_recorder(self) -> es.ApplicationRecorder:
        return self.new_factory().application_recorder()

    def test_insert_subscribe(self) -> None:
        """The library's optional case for recorders that offer ``subscribe``."""
        self.optional_test_insert_subscribe()


class TestNonInterleavingNotificationIds(_FreshStores, cases.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> es.ApplicationRecorder:
        return self.new_factory().application_recorder()


class TestTrackingRecorder(_FreshStores, cases.TrackingRecorderTestCase):
    def create_recorder(self) -> es.TrackingRecorder:
        return self.new_factory().tracking_recorder()


class TestProcessRecorder(_FreshStores, cases.ProcessRecorderTestCase):
    def create_recorder(self) -> es.ProcessRecorder:
        return self.new_factory().process_recorder()


class TestInfrastructureFactory(_FreshStores, cases.InfrastructureFactoryTestCase[Factory]):
    def setUp(self) -> None:
        self.prepare_folder()  # before the case's setUp, which constructs the factory
        self.env = Environment("TestCase")
        self.env[es.InfrastructureFactory.PERSISTENCE_MODULE] = MODULE
        self.env[Factory.ESKIT_STORE_URL] = self.new_url()
        cases.InfrastructureFactoryTestCase.setUp(self)

    def expected_factory_class(self) -> type[Factory]:
        return Factory

    def expected_aggregate_recorder_class(self) -> type[es.AggregateRecorder]:
        return SQLiteAggregateRecorder

    def expected_application_recorder_class(self) -> type[es.ApplicationRecorder]:
        return SQLiteApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[es.TrackingRecorder]:
        return SQLiteTrackingRecorder

    def tracking_recorder_subclass(self) -> type[es.TrackingRecorder]:
        return ViewTrackingRecorder

    def expected_process_recorder_class(self) -> type[es.ProcessRecorder]:
        return SQLiteProcessRecorder

    def test_the_snapshot_recorder_is_the_snapshot_stores(self) -> None:
        """Not a library case: the purpose the library's applications ask snapshots of."""
        self.assertIs(type(self.factory.aggregate_recorder("snapshots")), SnapshotRecorder)


class TestExampleApplication(_ApplicationsOnEskit, application_cases.ExampleApplicationTestCase):
    expected_factory_topic = FACTORY_TOPIC


class TestApplication(_ApplicationsOnEskit, application_cases.ApplicationTestCase):
    """The library's application cases; those that name a module of their own still run on it."""
