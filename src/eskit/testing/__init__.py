"""Test helpers for eskit: the contract suites every store adapter runs."""
