"""Bridges from eskit's stores to other libraries, one subpackage each.

Importing eskit imports none of them (nor the library a bridge serves): a bridge is
imported by its name only, and needs the extra that installs its library.

* :mod:`eskit.interop.eventsourcing`: a persistence module for the ``eventsourcing``
  library (extra ``eventsourcing``), on eskit's SQLite and Cassandra stores.
"""
