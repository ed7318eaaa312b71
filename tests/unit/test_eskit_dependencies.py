"""Dependencies point inward: eskit knows nothing of downloads; the domain knows only eskit.

Imports are read from the syntax tree, so a name in a string or a comment does not count
and every form of import (plain, from, relative, inside functions) does.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def imported_modules(path: Path, package: str) -> Iterator[str]:
    """Absolute names of the modules ``path`` imports; ``package`` is the folder it lies in, dotted."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.module or ""
                continue
            parts = package.split(".")
            keep = len(parts) - node.level + 1  # level 1 is the module's own package
            if keep <= 0:
                yield "." * node.level + (node.module or "")  # beyond the top: reported as is
                continue
            base = ".".join(parts[:keep])
            yield f"{base}.{node.module}" if node.module else base


def module_package(path: Path) -> str:
    """The dotted package a file under ``src`` belongs to."""
    return ".".join(path.relative_to(SRC).parent.parts)


def imports_under(folder: Path) -> dict[str, set[str]]:
    return {
        str(path.relative_to(SRC)): set(imported_modules(path, module_package(path)))
        for path in sorted(folder.rglob("*.py"))
    }


def top(module: str) -> str:
    return module.split(".", 1)[0]


def test_the_import_reader_sees_every_form_of_import(tmp_path: Path) -> None:
    module = tmp_path / "pkg" / "sub" / "mod.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "import os, downloads.entrypoints.http as api\n"
        "from downloads import cli\n"
        "from . import sibling\n"
        "from ..other import thing\n"
        "def later():\n"
        "    import json\n"
        "text = 'import downloads'  # import downloads\n"
    )

    assert set(imported_modules(module, "pkg.sub")) == {
        "os",
        "downloads.entrypoints.http",
        "downloads",
        "pkg.sub",
        "pkg.other",
        "json",
    }


def test_no_eskit_module_imports_downloads() -> None:
    found = imports_under(SRC / "eskit")
    assert found, "no eskit modules found"

    offenders = {path: sorted(m for m in mods if top(m) == "downloads") for path, mods in found.items()}

    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_the_downloads_domain_imports_only_eskit_and_the_standard_library() -> None:
    domain = SRC / "downloads" / "domain"
    if not domain.is_dir():
        pytest.skip("src/downloads/domain does not exist yet")

    def allowed(module: str) -> bool:
        return (
            top(module) == "eskit"
            or top(module) in sys.stdlib_module_names
            or module == "downloads.domain"
            or module.startswith("downloads.domain.")
        )

    offenders = {path: sorted(m for m in mods if not allowed(m)) for path, mods in imports_under(domain).items()}

    assert {path: mods for path, mods in offenders.items() if mods} == {}
