"""Tests of the development tools in tools/ (no Java, no network)."""
