"""A local Zoho CRM v8 org that speaks Zoho's wire format.

The demo, the tests and the benchmarks run against it, so the project can be tried without a Zoho
account: `python -m sandbox serve` (see `--help`) or, in-process,

    from sandbox import SandboxOrg, SandboxServer
    org = SandboxOrg(seed=7, leads=5000, deals=2000, timezone="Asia/Kolkata")
    with SandboxServer(org, port=0) as server:
        server.env()  # ZOHO_ACCOUNTS_URL, ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN, CRM_TIMEZONE
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
