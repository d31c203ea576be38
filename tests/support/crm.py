"""A sales user of the sandbox org, writing through the Zoho API as a person in the CRM would."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from sandbox import SandboxServer


def refresh_grant(env: Mapping[str, str]) -> dict[str, str]:
    """The form of Zoho's refresh-token grant, from a client's ZOHO_* settings (the sandbox's env())."""
    return {
        "grant_type": "refresh_token",
        "client_id": env["ZOHO_CLIENT_ID"],
        "client_secret": env["ZOHO_CLIENT_SECRET"],
        "refresh_token": env["ZOHO_REFRESH_TOKEN"],
    }


class CrmUser:
    """A sales user of the sandbox org, writing through the Zoho API with an access token."""

    def __init__(self, server: SandboxServer) -> None:
        token = requests.post(f"{server.url}/oauth/v2/token", timeout=10, data=refresh_grant(server.env())).json()
        self.url = f"{server.url}/crm/v8"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Zoho-oauthtoken {token['access_token']}"

    def create_deal(self, **fields: Any) -> str:
        response = self.session.post(f"{self.url}/Deals", json={"data": [fields]}, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()["data"][0]["details"]["id"]

    def create_leads(self, records: list[dict[str, Any]]) -> list[str]:
        """Insert leads as an import does: Zoho takes at most 100 records a call."""
        ids = []
        for start in range(0, len(records), 100):
            response = self.session.post(f"{self.url}/Leads", json={"data": records[start : start + 100]}, timeout=30)
            assert response.status_code == 201, response.text
            ids += [row["details"]["id"] for row in response.json()["data"]]
        return ids

    def update_deal(self, deal_id: str, **fields: Any) -> None:
        response = self.session.put(f"{self.url}/Deals/{deal_id}", json={"data": [fields]}, timeout=30)
        assert response.status_code == 200, response.text

    def delete(self, module: str, ids: list[str]) -> None:
        """Delete records the way a mass delete in the CRM does: Zoho takes at most 100 ids a call."""
        for start in range(0, len(ids), 100):
            response = self.session.delete(
                f"{self.url}/{module}", params={"ids": ",".join(ids[start : start + 100])}, timeout=30
            )
            assert response.status_code == 200, response.text
