"""OpenAPI links between operations: what a response's ids lead to.

They document the API's flow (open an account, then register a device, then
acquire a license ...) and let schemathesis' stateful phase drive it with real
ids. Operation ids are the endpoint functions' names (see ``create_app``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ACCOUNT_LINKS", "DEVICE_LINKS", "LICENSE_LINKS", "TITLE_LINKS"]


def _links(targets: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {
        "".join(part.title() for part in operation.split("_")): {"operationId": operation, "parameters": parameters}
        for operation, parameters in targets.items()
    }


_ACCOUNT = {"account_id": "$response.body#/account_id"}
_IN_PATH = {"account_id": "$request.path.account_id"}

#: from an account answer (open, change plan)
ACCOUNT_LINKS = _links(
    {
        name: _ACCOUNT
        for name in (
            "get_account",
            "change_plan",
            "close_account",
            "account_events",
            "register_device",
            "list_licenses",
        )
    }
)
#: from a device answer (register)
DEVICE_LINKS = _links(
    {name: {**_IN_PATH, "device_id": "$response.body#/device_id"} for name in ("deactivate_device", "sync_device")}
)
_LICENSE = {"account_id": "$response.body#/account_id", "license_id": "$response.body#/license_id"}
#: from a license answer (acquire, play, renew)
LICENSE_LINKS = _links(
    {
        **{name: _LICENSE for name in ("get_license", "start_playback", "renew_license", "release_license")},
        "title_downloads": {"account_id": "$response.body#/account_id", "title_id": "$response.body#/title_id"},
    }
)
#: from a title answer (set)
TITLE_LINKS = _links({"get_title": {"title_id": "$response.body#/title_id"}})
