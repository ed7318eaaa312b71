"""Loading the policy from a TOML file, with errors that name the offending key.

Every key is optional: what a file does not set keeps the built-in default
(see ``docs/policy.md``). A studio inherits each key it does not set from
``studios.default``; a title's studio must exist.

Policy text, from a file or a what-if request, is held to the bounds of
:mod:`downloads.adapters.policy_text` before it is parsed, and an error message
shows a value or a name only in short: whatever the text, reading it is a
:class:`PolicyError` or a policy, in bounded time and memory.
"""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

from downloads.adapters.policy_text import MAX_POLICY_BYTES, bound_broken
from downloads.domain.policy import CatalogTitle, Plan, Policy, Studio
from downloads.errors import DownloadsError

__all__ = ["PolicyError", "load_policy", "parse_duration", "parse_policy", "policy_from_text"]

_DURATION = re.compile(r"^\s*(\d+)\s*([dhms])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


class PolicyError(DownloadsError, ValueError):
    """The policy file is unreadable or has a bad key; the message names the key."""


def _shown(value: object) -> str:
    """``value`` as an error message shows it: short, and a table or an array by its kind only."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "..."


def _name(name: str) -> str:
    """A key's name as an error message shows it (a name may be as long as a line)."""
    return name if len(name) <= 64 else name[:60] + "..."


#: the longest duration a policy may set: every license's expiry must stay a representable time
MAX_DURATION = timedelta(days=3650)


def parse_duration(value: object, key: str, *, maximum: timedelta = MAX_DURATION) -> timedelta:
    """Parse ``"30d"``, ``"48h"``, ``"15m"`` or ``"2s"``, at most ``maximum``; the error names ``key``."""
    match = _DURATION.match(value) if isinstance(value, str) and len(value) <= 32 else None
    if match is None:
        raise PolicyError(f'{key}: expected a duration such as "30d", "48h", "15m" or "2s", got {_shown(value)}')
    try:
        duration = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        duration = None
    if duration is None or duration > maximum:
        raise PolicyError(f"{key}: {_shown(value)} is longer than the most allowed, {maximum.days} days")
    return duration


def _int(value: object, key: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PolicyError(f"{key}: expected a whole number >= {minimum}, got {_shown(value)}")
    return value


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{key}: expected true or false, got {_shown(value)}")
    return value


def _table(value: object, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{key}: expected a table")
    return value


def _only(table: dict[str, Any], key: str, allowed: set[str]) -> None:
    for name in table:
        if name not in allowed:
            raise PolicyError(f"{key}.{_name(name)}: unknown key (known: {', '.join(sorted(allowed))})")


def _studio(table: dict[str, Any], key: str, base: Studio) -> Studio:
    _only(table, key, {"license_duration", "playback_window", "max_downloads_per_title", "renewals_count_as_downloads"})
    return Studio(
        license_duration=parse_duration(table["license_duration"], f"{key}.license_duration")
        if "license_duration" in table
        else base.license_duration,
        playback_window=parse_duration(table["playback_window"], f"{key}.playback_window")
        if "playback_window" in table
        else base.playback_window,
        max_downloads_per_title=_int(table["max_downloads_per_title"], f"{key}.max_downloads_per_title", minimum=0)
        if "max_downloads_per_title" in table
        else base.max_downloads_per_title,
        renewals_count_as_downloads=_bool(table["renewals_count_as_downloads"], f"{key}.renewals_count_as_downloads")
        if "renewals_count_as_downloads" in table
        else base.renewals_count_as_downloads,
    )


def _limit(data: dict[str, Any], section: str, key: str, default: int) -> int:
    """``[section] key``, a whole number of at least 1, in a section that holds only that key."""
    if section not in data:
        return default
    table = _table(data[section], section)
    _only(table, section, {key})
    return _int(table[key], f"{section}.{key}", minimum=1) if key in table else default


def parse_policy(data: dict[str, Any]) -> Policy:
    """Build a :class:`Policy` from parsed TOML; raise :class:`PolicyError` naming a bad key."""
    default = Policy()
    _only(data, "policy", {"plans", "devices", "accounts", "downloads", "studios", "titles"})

    plans = dict(default.plans)
    if "plans" in data:
        plans = {}
        for name, table in _table(data["plans"], "plans").items():
            key = f"plans.{_name(name)}"
            table = _table(table, key)
            _only(table, key, {"download_devices"})
            if "download_devices" not in table:
                raise PolicyError(f"{key}.download_devices: required")
            plans[name] = Plan(_int(table["download_devices"], f"{key}.download_devices", minimum=0))
        if not plans:
            raise PolicyError("plans: at least one plan is needed")

    max_active = _limit(data, "devices", "max_active_downloads", default.max_active_downloads)
    max_devices = _limit(data, "accounts", "max_devices", default.max_devices)

    window = default.window
    if "downloads" in data:
        downloads = _table(data["downloads"], "downloads")
        _only(downloads, "downloads", {"window"})
        if "window" in downloads:
            window = parse_duration(downloads["window"], "downloads.window")
            if window <= timedelta(0):
                raise PolicyError("downloads.window: must be longer than zero")

    studios = dict(default.studios)
    if "studios" in data:
        tables = _table(data["studios"], "studios")
        base = _studio(_table(tables.get("default", {}), "studios.default"), "studios.default", Studio())
        studios = {"default": base}
        for name, table in tables.items():
            if name != "default":
                key = f"studios.{_name(name)}"
                studios[name] = _studio(_table(table, key), key, base)

    # The built-in demo catalog stays, minus titles of a built-in studio the file's [studios] left out:
    # the file never named them, so they must not make it invalid.
    titles = {title_id: title for title_id, title in default.titles.items() if title.studio in studios}
    if "titles" in data:
        titles = {}
        for title_id, table in _table(data["titles"], "titles").items():
            key = f"titles.{_name(title_id)}"
            table = _table(table, key)
            _only(table, key, {"studio"})
            studio = table.get("studio", "default")
            if not isinstance(studio, str) or studio not in studios:
                raise PolicyError(f"{key}.studio: unknown studio {_shown(studio)}")
            titles[title_id] = CatalogTitle(studio)
    for title_id, title in titles.items():
        if title.studio not in studios:
            raise PolicyError(f"titles.{_name(title_id)}.studio: unknown studio {_shown(title.studio)}")

    return Policy(
        plans=plans,
        max_active_downloads=max_active,
        max_devices=max_devices,
        window=window,
        studios=studios,
        titles=titles,
    )


def load_policy(path: str | Path | None) -> Policy:
    """Read a policy file (the built-in default when ``path`` is None); :class:`PolicyError` says what is wrong.

    At most :data:`~downloads.adapters.policy_text.MAX_POLICY_BYTES` (and one more, to tell) are read.
    """
    if path is None:
        return Policy()
    source = f"policy file {str(path)!r}"
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read {source}: {exc.strerror}") from exc
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"{source} is larger than {MAX_POLICY_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{source} is not UTF-8 text (byte {exc.start:,})") from None
    return _parse(text, source)


def policy_from_text(text: str) -> Policy:
    """Read a policy from TOML text (a what-if request's); :class:`PolicyError` names what is wrong."""
    return _parse(text, "the policy")


def _parse(text: str, source: str) -> Policy:
    broken = bound_broken(text)
    if broken is not None:
        joint = " is " if broken.startswith("larger") else ", "
        raise PolicyError(f"{source}{joint}{broken}")
    try:
        data = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or a conversion the bounds have not foreseen
        raise PolicyError(f"{source} is not valid TOML: {_short(str(exc))}") from None
    except RecursionError:  # cannot happen within the bounds: kept so that it never becomes a crash
        raise PolicyError(f"{source} nests too deeply to be a policy") from None
    return parse_policy(data)


def _short(message: str) -> str:
    return message if len(message) <= 200 else message[:196] + "..."
