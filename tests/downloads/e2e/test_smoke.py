from __future__ import annotations

from tests.support.server import Server


def test_a_member_can_open_an_account_and_download_a_title(server: Server) -> None:
    with server.client() as http:
        assert http.post("/v1/accounts", json={"account_id": "a1", "plan": "basic"}).status_code == 201
        assert http.post("/v1/accounts/a1/devices", json={"device_id": "d1", "model": "phone"}).status_code == 201
        issued = http.post("/v1/accounts/a1/licenses", json={"device_id": "d1", "title_id": "demo-title-1"})
        assert issued.status_code == 201
        assert issued.json()["status"] == "active"
