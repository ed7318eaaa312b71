"""``python -m tools.kafka_broker``: see :mod:`tools.kafka_broker.cli`."""

from __future__ import annotations

import sys

from tools.kafka_broker.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
