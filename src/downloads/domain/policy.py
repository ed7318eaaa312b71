"""The download policy as pure data: plans, device limits, studios, the demo catalog.

The domain reads a :class:`Policy`; loading it from TOML lives in
:mod:`downloads.adapters.policy_file`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

__all__ = ["CatalogTitle", "Plan", "Policy", "Studio"]


@dataclass(frozen=True)
class Plan:
    """A subscription plan: how many devices may hold downloads at once."""

    download_devices: int


@dataclass(frozen=True)
class Studio:
    """A studio's rules for its titles' licenses."""

    license_duration: timedelta = timedelta(days=30)
    playback_window: timedelta = timedelta(hours=48)
    max_downloads_per_title: int = 0  # per account per window; 0 = unlimited
    renewals_count_as_downloads: bool = True


@dataclass(frozen=True)
class CatalogTitle:
    """A title the policy file puts in the catalog (the API may add and change titles)."""

    studio: str


@dataclass(frozen=True)
class Policy:
    """Every rule parameter the domain needs."""

    plans: dict[str, Plan] = field(default_factory=lambda: {"basic": Plan(1), "standard": Plan(2), "premium": Plan(6)})
    max_active_downloads: int = 100
    max_devices: int = 20  # registered, active devices per account
    window: timedelta = timedelta(days=365)
    studios: dict[str, Studio] = field(
        default_factory=lambda: {"default": Studio(), "restricted": Studio(max_downloads_per_title=3)}
    )
    titles: dict[str, CatalogTitle] = field(
        default_factory=lambda: {
            "demo-title-1": CatalogTitle("default"),
            "demo-title-2": CatalogTitle("restricted"),
        }
    )

    def studio(self, name: str) -> Studio:
        """The studio's rules (a studio missing from the policy gets the default studio's)."""
        return self.studios.get(name) or self.studios.get("default") or Studio()
