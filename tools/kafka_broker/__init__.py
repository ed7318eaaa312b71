"""A local Apache Kafka 4 broker for tests and development (standard library only).

A development tool of this repository, not part of the installed packages: run it from the
repository root (``python -m tools.kafka_broker``, or ``make kafka-up`` / ``make kafka-down``).

The broker comes from Maven Central (``org.apache.kafka:kafka_2.13`` with its dependencies and a
log4j 2 binding, fetched once with ``mvn`` into the git-ignored ``.cache/kafka/<version>/lib``)
and runs on OpenJDK 17 as one KRaft node that is broker and controller at once, on
``127.0.0.1:19092`` (controller ``19093``), with a 256 MB heap. Topics are never created by a
client naming them (``auto.create.topics.enable=false``): a test, or the relay when asked, makes them.

Modules: :mod:`~tools.kafka_broker.classpath` (Java and the Maven fetch),
:mod:`~tools.kafka_broker.broker` (:class:`LocalKafkaBroker`: configuration, storage format,
process, readiness), :mod:`~tools.kafka_broker.cli`; ``files/`` holds the pom, the logging
configuration and the ``server.properties`` template.

Command line (progress on stderr)::

    python -m tools.kafka_broker fetch
    python -m tools.kafka_broker up [--wipe]
    python -m tools.kafka_broker status|down [--wipe]|kill|pause|resume

Python API (for pytest fixtures)::

    broker = LocalKafkaBroker(base_dir)
    broker.start()          # fetches, formats the first time, starts; a running broker is reused
    broker.bootstrap        # "127.0.0.1:19092"
    broker.stop(); broker.start()   # data kept
    broker.stop(wipe=True)

Environment: ``ESKIT_KAFKA_HOME`` overrides the classpath folder, ``ESKIT_KAFKA_JAVA`` the
``java`` executable (17 or newer), ``ESKIT_KAFKA_VERSION`` the version.

Importing this package does no work: nothing is fetched, started or written until called.
"""

from __future__ import annotations

from tools.kafka_broker.base import BrokerError
from tools.kafka_broker.broker import LocalKafkaBroker
from tools.kafka_broker.classpath import fetch
from tools.kafka_broker.cli import main
from tools.kafka_broker.locations import CONTROLLER_PORT, DEFAULT_VERSION, HOST, PORT, default_base_dir, kafka_home

__all__ = [
    "CONTROLLER_PORT",
    "DEFAULT_VERSION",
    "HOST",
    "PORT",
    "BrokerError",
    "LocalKafkaBroker",
    "default_base_dir",
    "fetch",
    "kafka_home",
    "main",
]
