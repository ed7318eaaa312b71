"""Event store adapters, one subpackage or module per backend, opened by URL through the registry.

Importing this package loads no adapter: :func:`open_stores` imports the one a
URL names (see :mod:`eskit.stores.registry`).
"""

from __future__ import annotations

from eskit.stores.registry import ADAPTERS, Adapter, Stores, open_stores

__all__ = ["ADAPTERS", "Adapter", "Stores", "open_stores"]
