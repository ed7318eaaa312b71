"""Request schemas of the HTTP API and its error envelope; answers are the presenters' models."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ID_PATTERN",
    "AccountIn",
    "DeviceIn",
    "ErrorBody",
    "ErrorOut",
    "Id",
    "LicenseIn",
    "PlanIn",
    "SyncIn",
    "TitleIn",
    "WhatIfIn",
]

#: identifiers: 1 to 128 letters, digits and ``._:-``, not only dots (``.`` and ``..`` cannot be addressed
#: in a path); the length is checked apart (``max_length``)
ID_PATTERN = r"^[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$"

Id = Annotated[
    str,
    Path(
        pattern=ID_PATTERN, max_length=128, description="an identifier: 1 to 128 of A-Z a-z 0-9 . _ : -, not only dots"
    ),
]
IdField = Annotated[str, Field(pattern=ID_PATTERN, max_length=128)]

#: Unicode categories free text may not hold: controls (escape sequences, tabs, newlines), format
#: characters (bidirectional overrides, zero-width marks), line and paragraph separators, surrogates
#: and private use. They have no place in a name and can drive the terminal or page that shows it.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})


def _printable_text(value: str) -> str:
    for char in value:
        if unicodedata.category(char) in _UNPRINTABLE:
            raise ValueError(f"contains the control or format character U+{ord(char):04X}")
    return value


#: free text shown to people: printable characters only
ModelText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable_text)]
NameText = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable_text)]


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class AccountIn(_In):
    account_id: IdField
    plan: NameText


class PlanIn(_In):
    plan: NameText


class DeviceIn(_In):
    device_id: IdField
    model: ModelText


class SyncIn(_In):
    license_ids: Annotated[list[IdField], Field(max_length=1000)]


class LicenseIn(_In):
    device_id: IdField
    title_id: IdField


class TitleIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    studio: Annotated[NameText, Field(strict=True)]
    downloadable: Annotated[bool, Field(strict=True)] = True
    available_until: datetime | None = None

    @field_validator("available_until")
    @classmethod
    def _fits_in_utc(cls, value: datetime | None) -> datetime | None:
        """Refuse a time that has no UTC form (e.g. 9999-12-31T23:59-14:00): answers and events are in UTC."""
        if value is not None:
            try:
                (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
            except OverflowError:
                raise ValueError("the time is out of range in UTC") from None
        return value


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, object]


class ErrorOut(BaseModel):
    error: ErrorBody


class WhatIfIn(BaseModel):
    """A what-if request: the other policy as TOML text, and the time range to re-decide."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    policy: Annotated[str, Field(strict=True, max_length=32_768)]
    since: Annotated[datetime | None, Field(alias="from")] = None
    until: Annotated[datetime | None, Field(alias="to")] = None

    @field_validator("since", "until")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        except OverflowError:
            raise ValueError("the time is out of range in UTC") from None
        if value.year < 1971:
            raise ValueError("the time is before any possible event")
        return value
