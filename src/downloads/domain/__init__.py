"""The downloads domain: the Account and Title aggregates, their events, policy and errors."""

from downloads.domain.account import Account
from downloads.domain.errors import Denied, DomainError, Gone, Invalid, NotFound
from downloads.domain.events import ACCOUNT_EVENTS, TITLE_EVENTS
from downloads.domain.model import Device, License
from downloads.domain.policy import CatalogTitle, Plan, Policy, Studio
from downloads.domain.requests import AcceptedRequest
from downloads.domain.title import Title, TitleInfo

__all__ = [
    "ACCOUNT_EVENTS",
    "TITLE_EVENTS",
    "AcceptedRequest",
    "Account",
    "CatalogTitle",
    "Denied",
    "Device",
    "DomainError",
    "Gone",
    "Invalid",
    "License",
    "NotFound",
    "Plan",
    "Policy",
    "Studio",
    "Title",
    "TitleInfo",
]
