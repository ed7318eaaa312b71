"""``python -m downloads.entrypoints.cli``: the ``downloads`` command."""

import sys

from downloads.entrypoints.cli import main

sys.exit(main())
