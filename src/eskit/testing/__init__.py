"""Test helpers for eskit (local infrastructure such as Cassandra clusters)."""
