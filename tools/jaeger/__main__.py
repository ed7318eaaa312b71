"""``python -m tools.jaeger fetch``: see :mod:`tools.jaeger`."""

from __future__ import annotations

import sys

from tools.jaeger import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
