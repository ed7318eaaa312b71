"""The Title aggregate: a catalog entry with its studio and availability."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from downloads.domain.errors import Invalid
from downloads.domain.events import TitleSet
from downloads.domain.policy import Policy
from eskit import Aggregate, DomainEvent

__all__ = ["Title", "TitleInfo"]


@dataclass(frozen=True)
class TitleInfo:
    """What the account needs to know of a title when licensing it."""

    title_id: str
    studio: str
    downloadable: bool = True
    available_until: datetime | None = None

    def downloadable_at(self, now: datetime) -> bool:
        """Whether a download may start at ``now``."""
        return self.downloadable and (self.available_until is None or now < self.available_until)


class Title(Aggregate):
    """A title in the catalog. Setting it again replaces its studio and availability."""

    snapshot_type = "Title"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.info: TitleInfo | None = None

    def set(
        self,
        *,
        studio: str,
        downloadable: bool,
        available_until: datetime | None,
        policy: Policy,
        now: datetime,
    ) -> TitleInfo:
        """Put the title in the catalog or change it; the studio must exist (``UNKNOWN_STUDIO``)."""
        if studio not in policy.studios:
            raise Invalid("UNKNOWN_STUDIO", f"studio {studio!r} is not in the policy", {"studio": studio})
        wanted = TitleInfo(self.id, studio, downloadable, available_until)
        if wanted != self.info:
            self.trigger(TitleSet(self.id, studio, downloadable, available_until, now))
        assert self.info is not None
        return self.info

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, TitleSet):
            self.info = TitleInfo(event.title_id, event.studio, event.downloadable, event.available_until)

    def to_snapshot(self) -> Mapping[str, Any]:
        assert self.info is not None
        until = self.info.available_until
        return {
            "studio": self.info.studio,
            "downloadable": self.info.downloadable,
            "available_until": until.isoformat() if until else None,
        }

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: Mapping[str, Any]) -> Self:
        title = cls(aggregate_id)
        until = state["available_until"]
        title.info = TitleInfo(
            aggregate_id,
            state["studio"],
            state["downloadable"],
            datetime.fromisoformat(until) if until else None,
        )
        title.version = version
        return title
