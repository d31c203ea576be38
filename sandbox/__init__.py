"""A local Zoho CRM v8 org that speaks Zoho's wire format.

The demo, the tests and the benchmarks run against it, so the project can be tried without a Zoho
account: `python -m sandbox serve` (see `--help`) or, in-process,

    from sandbox import SandboxOrg, SandboxServer
    org = SandboxOrg(seed=7, leads=5000, deals=2000, timezone="Asia/Kolkata")
    with SandboxServer(org, port=0) as server:
        server.env()  # ZOHO_ACCOUNTS_URL, ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN, CRM_TIMEZONE

Like a real org it has custom fields on Leads and Deals (Region, Product_Line, Seats, ...; listed with
`custom_field: true` by `/settings/fields`), and an admin can add one at any time, through Zoho's Create
Custom Fields API (`POST /crm/v8/settings/fields?module=Deals`) or `org.add_field("Deals", "Sales Channel",
"picklist", ["Direct", "Partner"])`; records created or edited from then on carry values for it.
"""

from .auth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_REFRESH_TOKEN
from .org import SandboxOrg
from .server import SandboxServer

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_REFRESH_TOKEN",
    "SandboxOrg",
    "SandboxServer",
]
