"""The local Kafka broker tool without starting Java: its configuration, its state, its command line."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.cassandra_cluster import repo_root
from tools.kafka_broker import CONTROLLER_PORT, PORT, LocalKafkaBroker, default_base_dir, kafka_home

MODULES = ("", ".__main__", ".base", ".broker", ".classpath", ".cli", ".locations")


@pytest.mark.parametrize("suffix", MODULES)
def test_every_module_imports_without_doing_anything(suffix: str) -> None:
    importlib.import_module("tools.kafka_broker" + suffix)


def test_the_broker_lives_in_the_git_ignored_cache_of_the_repository() -> None:
    root = repo_root()
    assert default_base_dir().is_relative_to(root / ".cache")
    assert kafka_home().is_relative_to(root / ".cache")
    assert ".cache/" in (root / ".gitignore").read_text().splitlines()


def test_the_configuration_is_one_loopback_node_that_never_makes_a_topic_by_itself(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(tmp_path / "b", log=None)
    broker.write_config()
    lines = dict(
        line.split("=", 1) for line in broker.config_path.read_text().splitlines() if line and not line.startswith("#")
    )
    assert lines["process.roles"] == "broker,controller"
    assert lines["listeners"] == f"PLAINTEXT://127.0.0.1:{PORT},CONTROLLER://127.0.0.1:{CONTROLLER_PORT}"
    assert lines["log.dirs"] == str(broker.data_dir)
    assert lines["auto.create.topics.enable"] == "false"
    assert broker.bootstrap == "127.0.0.1:19092"


def test_the_ports_stay_clear_of_cassandra_and_of_the_ephemeral_range() -> None:
    used_by_cassandra = {7000, 9042, *range(7200, 7210)}
    for port in (PORT, CONTROLLER_PORT):
        assert port not in used_by_cassandra
        assert port < 32768  # test servers take ports the kernel hands out, from 32768 up


def test_a_broker_never_started_is_missing_and_stopping_it_does_nothing(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(tmp_path / "none", log=None)
    assert broker.state() == "missing" and broker.pid() is None and not broker.ready()
    broker.stop()
    assert not (tmp_path / "none").exists()


def test_a_pid_file_naming_another_process_is_not_trusted(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(tmp_path / "b", log=None)
    broker.write_config()
    (broker.base_dir / "kafka.pid").write_text(f"{os.getpid()}\n")  # this pytest, not a broker
    assert broker.pid() is None and broker.state() == "stopped"


def test_the_command_line_names_its_verbs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.kafka_broker", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for verb in ("fetch", "up", "down", "status", "kill", "pause", "resume"):
        assert verb in result.stdout
