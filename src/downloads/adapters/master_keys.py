"""The master key that wraps every member's key: from the environment, or, in development, from a local file.

In production mode (:attr:`downloads.settings.Settings.production`) the master
key must come from ``DOWNLOADS_MASTER_KEY``; without it nothing starts. In
development, a key is generated once and kept in a file only its owner can
read, beside a SQLite store's file (``x.master-key`` beside ``x.db``) or in the
working directory for other stores (``downloads-dev.master-key``), so that
``make run`` works with no setup and a store written in one run is readable in
the next; an in-memory store gets a new key in each process (its data goes
with the process anyway). ``DOWNLOADS_MASTER_PREVIOUS_KEY`` names the key
before a rotation, which still unwraps (``downloads keys rotate`` rewraps).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from downloads.errors import DownloadsError
from eskit.privacy import MasterKey, MasterKeys

__all__ = ["DEV_KEY_FILE", "MasterKeySource", "NoMasterKey", "dev_key_path", "master_keys"]


class NoMasterKey(DownloadsError):
    """Production mode without ``DOWNLOADS_MASTER_KEY``, or a development key that cannot be kept."""


#: the development key's file for a store that has no file of its own (Cassandra in development mode)
DEV_KEY_FILE = "downloads-dev.master-key"


@dataclass(frozen=True)
class MasterKeySource:
    """The master keys, and where the current one came from (None: the environment)."""

    keys: MasterKeys
    #: the development key's file, when the key is one (``memory`` for an in-memory store's)
    dev_file: str | None = None


def dev_key_path(store: str) -> Path | None:
    """Where a development key is kept for ``store``; None for an in-memory store."""
    if store.startswith("memory:"):
        return None
    if store.startswith("sqlite:///"):
        from eskit.stores.sqlite import sqlite_path

        path = Path(sqlite_path(store))
        return path.with_name(path.stem + ".master-key")
    return Path(DEV_KEY_FILE)


def master_keys(
    *, key: str | None, previous_key: str | None, production: bool, why: str, store: str
) -> MasterKeySource:
    """The master keys: ``key`` (and ``previous_key``) when set; else, unless in ``production`` (which
    ``why`` explains), the development key for ``store``. Raises :class:`NoMasterKey` in production
    without a key, and :class:`~eskit.MasterKeyError` for a malformed key."""
    previous = [MasterKey.parse(previous_key)] if previous_key else []
    if key:
        return MasterKeySource(MasterKeys(MasterKey.parse(key), previous))
    if production:
        raise NoMasterKey(
            f"DOWNLOADS_MASTER_KEY is not set, and this is production mode ({why}): every member's key is "
            "wrapped by that master key, which must come from the environment (make one with `downloads keys "
            "new` and keep it in your secret store); DOWNLOADS_MODE=development runs with a generated key instead"
        )
    path = dev_key_path(store)
    if path is None:
        return MasterKeySource(MasterKeys(MasterKey.generate(), previous), "memory")
    return MasterKeySource(MasterKeys(_dev_key(path), previous), str(path))


def _dev_key(path: Path) -> MasterKey:
    """The development key kept at ``path``, made there (readable by its owner only) the first time."""
    if not path.exists():
        key = MasterKey.generate()
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(key.text() + "\n")
            # A link fails when the file exists: two processes starting at once keep the first one's key.
            with contextlib.suppress(FileExistsError):
                os.link(partial, path)
        except OSError as exc:
            raise NoMasterKey(f"cannot keep a development master key at {path}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    try:
        return MasterKey.parse(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise NoMasterKey(f"cannot read the development master key at {path}: {exc}") from exc
