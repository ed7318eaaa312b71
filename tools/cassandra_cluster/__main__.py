"""``python -m tools.cassandra_cluster``: see :mod:`tools.cassandra_cluster.cli`."""

from __future__ import annotations

import sys

from tools.cassandra_cluster.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
