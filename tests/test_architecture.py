"""The layers hold: dependencies point inward, and every public module says what it offers.

Imports are read from the syntax tree, so a name in a string or a comment does not count and
every form of import (plain, from, relative, inside functions) does. The layers, inside out:

* ``eskit`` (core, ports, stores) imports nothing of ``downloads``; its core loads no adapter;
* ``downloads.errors`` (the error root) imports nothing, and every layer may import it;
* ``downloads.domain`` imports the standard library and eskit's domain types only;
* ``downloads.application`` imports the domain, eskit and libraries, never adapters or entrypoints;
* ``downloads.entrypoints`` are imported by nothing outside themselves.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

#: eskit's domain types: what the domain may use of eskit
ESKIT_DOMAIN_TYPES = {"eskit", "eskit.aggregate", "eskit.events", "eskit.exceptions"}
#: the service's error root: every layer may import it, it imports nothing
ROOT_ERROR = "downloads.errors"
#: eskit's store adapters, which the core must not import
ESKIT_ADAPTERS = ("eskit.stores.memory", "eskit.stores.sqlite", "eskit.stores.cassandra")
#: drivers and libraries that importing eskit must not load (the last one only its bridge imports)
DRIVERS = ("sqlite3", "cassandra", "eventsourcing")
#: eskit's bridge to the eventsourcing library: the one part of eskit that imports it
ESKIT_EVENTSOURCING_BRIDGE = "eskit.interop.eventsourcing"


def imported_modules(path: Path, package: str) -> Iterator[tuple[str, bool]]:
    """(absolute module name, imported at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = {id(node) for node in tree.body}
    type_checking = {
        id(inner)
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for inner in node.body
    }
    for node in ast.walk(tree):
        at_import = id(node) in top_level
        if id(node) in type_checking:
            continue  # for the type checker only: never imported when the program runs
        if isinstance(node, ast.Import):
            yield from ((alias.name, at_import) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.module or "", at_import
                continue
            parts = package.split(".")
            keep = len(parts) - node.level + 1  # level 1 is the module's own package
            if keep <= 0:
                yield "." * node.level + (node.module or ""), at_import
                continue
            base = ".".join(parts[:keep])
            yield (f"{base}.{node.module}" if node.module else base), at_import


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC if SRC in path.parents else ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_under(folder: Path) -> dict[str, set[tuple[str, bool]]]:
    return {module_name(path): set(imported_modules(path, package_of(path))) for path in sorted(folder.rglob("*.py"))}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def offenders(folder: Path, allowed: object) -> dict[str, list[str]]:
    found = {
        module: sorted(name for name, _ in imports if not allowed(name))  # type: ignore[operator]
        for module, imports in imports_under(folder).items()
    }
    assert found, f"no modules under {folder}"
    return {module: names for module, names in found.items() if names}


def is_stdlib(module: str) -> bool:
    return module.split(".", 1)[0] in sys.stdlib_module_names


def test_the_import_reader_sees_every_form_of_import(tmp_path: Path) -> None:
    module = tmp_path / "pkg" / "sub" / "mod.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "import os, downloads.entrypoints as ep\n"
        "from typing import TYPE_CHECKING\n"
        "from downloads import bootstrap\n"
        "from . import sibling\n"
        "from ..other import thing\n"
        "if TYPE_CHECKING:\n"
        "    from eskit.stores.sqlite import SQLiteEventStore\n"
        "def later():\n"
        "    import json\n"
        "text = 'import downloads'  # import downloads\n"
    )

    assert set(imported_modules(module, "pkg.sub")) == {
        ("os", True),
        ("downloads.entrypoints", True),
        ("typing", True),
        ("downloads", True),
        ("pkg.sub", True),
        ("pkg.other", True),
        ("json", False),
    }


def test_eskit_imports_nothing_of_downloads() -> None:
    assert offenders(SRC / "eskit", lambda name: not within(name, "downloads")) == {}


def test_eskit_outside_its_stores_imports_no_adapter_at_import_time() -> None:
    found = {
        module: sorted(name for name, at_import in imports if at_import and name.startswith(ESKIT_ADAPTERS))
        for module, imports in imports_under(SRC / "eskit").items()
        if not within(module, "eskit.stores") and not within(module, "eskit.testing")
    }
    assert {module: names for module, names in found.items() if names} == {}


def test_importing_eskit_loads_no_adapter_and_no_driver() -> None:
    probe = (
        "import sys, eskit\n"
        f"adapters = {ESKIT_ADAPTERS!r}\n"
        f"DRIVERS = {DRIVERS!r}\n"
        "print(sorted(m for m in sys.modules if m.startswith(adapters) or m in DRIVERS))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "[]"


def test_only_eskits_bridge_imports_the_eventsourcing_library() -> None:
    found = {
        module: sorted(name for name, _ in imports if within(name, "eventsourcing"))
        for module, imports in imports_under(SRC / "eskit").items()
        if not within(module, ESKIT_EVENTSOURCING_BRIDGE)
    }
    assert {module: names for module, names in found.items() if names} == {}
    bridge = imports_under(SRC / "eskit" / "interop" / "eventsourcing")
    assert any(within(name, "eventsourcing") for imports in bridge.values() for name, _ in imports)


def test_the_domain_imports_only_the_standard_library_and_eskits_domain_types() -> None:
    def allowed(name: str) -> bool:
        return is_stdlib(name) or name in ESKIT_DOMAIN_TYPES or within(name, "downloads.domain") or name == ROOT_ERROR

    assert offenders(SRC / "downloads" / "domain", allowed) == {}


def test_the_application_imports_the_domain_and_eskit_but_no_adapter_or_entrypoint() -> None:
    def allowed(name: str) -> bool:
        if within(name, "downloads"):
            return within(name, "downloads.domain") or within(name, "downloads.application") or name == ROOT_ERROR
        return not within(name, "eskit.stores")

    assert offenders(SRC / "downloads" / "application", allowed) == {}


def test_read_models_speak_to_eskits_read_model_port_never_to_a_store_adapter() -> None:
    """Read models are written once: decisions and queries over eskit.readmodel, whatever keeps them."""

    def allowed(name: str) -> bool:
        if within(name, "downloads"):
            return any(
                within(name, inner)
                for inner in ("downloads.domain", "downloads.application", "downloads.readmodels", ROOT_ERROR)
            )
        if within(name, "eskit.stores"):
            return name == "eskit.stores.timestamps"  # the time encoding every backend shares
        return True

    assert offenders(SRC / "downloads" / "readmodels", allowed) == {}


def test_adapters_serve_the_application_and_import_no_entrypoint_read_side_or_composition_root() -> None:
    def allowed(name: str) -> bool:
        if within(name, "downloads"):
            return any(
                within(name, inner)
                for inner in ("downloads.domain", "downloads.application", "downloads.adapters", ROOT_ERROR)
            )
        return True

    assert offenders(SRC / "downloads" / "adapters", allowed) == {}


def test_only_the_relays_kafka_adapter_imports_the_kafka_client_and_only_when_a_sink_is_made() -> None:
    found = {
        module: sorted(name for name, _ in imports if within(name, "confluent_kafka"))
        for folder in (SRC / "eskit", SRC / "downloads")
        for module, imports in imports_under(folder).items()
    }
    assert {module: names for module, names in found.items() if names} == {
        "downloads.adapters.relay.kafka": ["confluent_kafka"]
    }
    probe = (
        "import sys, eskit, downloads.adapters.relay, downloads.bootstrap\nprint('confluent_kafka' in sys.modules)\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "False"


def test_the_error_root_imports_nothing_of_the_service() -> None:
    found = imports_under(SRC / "downloads")[ROOT_ERROR]
    assert sorted(name for name, _ in found if within(name, "downloads") or within(name, "eskit")) == []


def test_every_error_the_service_raises_on_purpose_derives_from_its_root() -> None:
    """Each project exception class is a DownloadsError (eskit's have their own root, EskitError)."""
    import importlib
    import inspect

    from downloads.errors import DownloadsError

    outside = []
    for module in imports_under(SRC / "downloads"):
        if module.endswith(".__main__"):
            continue  # running it is what importing it does
        loaded = importlib.import_module(module)
        for name, value in vars(loaded).items():
            is_error = inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == module
            if is_error and not issubclass(value, DownloadsError):
                outside.append(f"{module}.{name}")
    assert outside == []


def test_every_eskit_error_is_drawn_in_the_tree_of_eskit_exceptions() -> None:
    import importlib
    import inspect

    from eskit import EskitError

    tree = importlib.import_module("eskit.exceptions").__doc__ or ""
    missing = []
    for module in imports_under(SRC / "eskit"):
        if module.endswith(".__main__"):
            continue
        loaded = importlib.import_module(module)
        for name, value in vars(loaded).items():
            is_error = inspect.isclass(value) and issubclass(value, EskitError) and value.__module__ == module
            if is_error and name != "EskitError" and f"── {name}" not in tree:
                missing.append(f"{module}.{name}")
    assert missing == []


def test_nothing_outside_the_entrypoints_imports_one() -> None:
    found: dict[str, list[str]] = {}
    for folder in (SRC, ROOT / "tools", ROOT / "bench"):
        for module, imports in imports_under(folder).items():
            if within(module, "downloads.entrypoints"):
                continue
            names = sorted(name for name, _ in imports if within(name, "downloads.entrypoints"))
            if names:
                found[module] = names
    assert found == {}


def _public_modules() -> list[Path]:
    found = []
    for folder in (SRC / "eskit", SRC / "downloads", ROOT / "tools"):
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder)
            if any(part.startswith("_") and part != "__init__.py" for part in relative.parts):
                continue
            if path.name in ("__init__.py", "__main__.py") and not _defines_or_reexports(path):
                continue
            found.append(path)
    return found


def _defines_or_reexports(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(not isinstance(node, ast.Expr) for node in tree.body)  # more than a docstring


def _isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions, each alphabetical."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("path", _public_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_public_module_has_a_sorted_all_naming_what_it_defines(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    declared: list[str] | None = None
    bound: set[str] = set()
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    bound.add(target.id)
                    if target.id == "__all__" and node.value is not None:
                        declared = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
            defined.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)

    assert declared is not None, "no __all__"
    assert declared == sorted(declared, key=_isort_key), "__all__ is not sorted"
    assert sorted(set(declared) - bound) == [], "__all__ names what the module does not have"
    public = {name for name in defined if not name.startswith("_")}
    assert sorted(public - set(declared)) == [], "public definitions missing from __all__"
