"""Seeded fault injection and the API-credit ledger: what a real Zoho org does to a client on a bad day.

`FaultPlan` picks, for each API request (`/crm/...`), whether it fails and how, from a seeded random
stream, so a test or a benchmark sees the same faults in the same order on every run with the same
seed and the same requests. The kinds:

- `429`: TOO_MANY_REQUESTS with `Retry-After` and the credit headers;
- `500`: Zoho's INTERNAL_ERROR envelope; `502`, `503`: the HTML page a load balancer sends;
- `drop`: the connection closes without an answer;
- `slow`: the answer comes `slow_seconds` late (but comes);
- `truncated`: HTTP 200 with the JSON cut in half (Content-Length matches the cut, as from a proxy);
- `html`: HTTP 200 with an HTML error page (a captive portal, a maintenance page);
- `invalid_token`: every access token dies (Zoho revoked them), so this and later calls get 401;
- `page_token_expiry`: a request carrying `page_token` gets EXPIRED_VALUE;
- `mutate`: before answering, a random record of the module is modified and another deleted, so
  records move while the client pages.

`Credits` is Zoho's daily allowance: each API call costs one credit; once half is used every answer
carries `X-API-CREDITS-REMAINING`; at zero every call is 429 TOO_MANY_REQUESTS.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = (
    "429",
    "500",
    "502",
    "503",
    "drop",
    "slow",
    "truncated",
    "html",
    "invalid_token",
    "page_token_expiry",
    "mutate",
)
GARBLED_KINDS = ("truncated", "html")
CREDITS_HEADER = "X-API-CREDITS-REMAINING"
RETRY_AFTER_SECONDS = 1
HTML_ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>{status} {reason}</title></head><body><h1>{reason}</h1>"
    "<p>The server is temporarily unable to service your request. Please try again later.</p></body></html>"
)


@dataclass
class FaultPlan:
    """Which requests fail: each API request under `path_prefix` fails with probability `rate`,
    with a kind drawn uniformly from `kinds`."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    path_prefix: str = "/crm/"
    slow_seconds: float = 1.0
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind(s) {', '.join(unknown)}; expected some of {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("the fault rate is a fraction between 0 and 1")
        self._rng = random.Random(f"sandbox-faults:{self.seed}")
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """`rate=0.02,kinds=500+html+truncated,seed=3,slow=0.5` (every part optional)."""
        options: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, value = part.partition("=")
            if name == "rate":
                options["rate"] = float(value)
            elif name == "kinds":
                options["kinds"] = tuple(k for k in value.split("+") if k)
            elif name == "seed":
                options["seed"] = int(value)
            elif name == "slow":
                options["slow_seconds"] = float(value)
            elif name == "path":
                options["path_prefix"] = value
            else:
                raise ValueError(f"unknown fault option {name!r} (rate, kinds, seed, slow, path)")
        return cls(**options)

    @classmethod
    def from_json(cls, body: Any) -> FaultPlan:
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        allowed = {"rate", "kinds", "seed", "path_prefix", "slow_seconds"}
        unknown = set(body) - allowed
        if unknown:
            raise ValueError(f"unknown fault option(s) {', '.join(sorted(unknown))}")
        options = dict(body)
        if "kinds" in options:
            options["kinds"] = tuple(options["kinds"])
        return cls(**options)

    def draw(self, path: str, has_page_token: bool) -> str | None:
        """The fault for this request, or None. `page_token_expiry` only hits requests that carry one."""
        if self.rate <= 0 or not path.startswith(self.path_prefix):
            return None
        with self._lock:
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
            if kind == "page_token_expiry" and not has_page_token:
                return None
            self.injected[kind] += 1
            return kind

    def pick(self, items: list[Any]) -> Any:
        with self._lock:
            return self._rng.choice(items) if items else None

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {"rate": self.rate, "kinds": list(self.kinds), "seed": self.seed, "injected": dict(self.injected)}


class Credits:
    """A rolling-day credit allowance (None: unlimited, the default)."""

    def __init__(self, allowance: int | None = None, remaining: int | None = None) -> None:
        self._lock = threading.Lock()
        self.set(allowance, remaining)

    def set(self, allowance: int | None, remaining: int | None = None) -> None:
        with self._lock:
            self.allowance = allowance
            self.remaining = allowance if remaining is None else remaining

    def spend(self) -> tuple[bool, dict[str, str]]:
        """Charge one call: (allowed, headers for the answer)."""
        with self._lock:
            if self.allowance is None or self.remaining is None:
                return True, {}
            if self.remaining <= 0:
                return False, {CREDITS_HEADER: "0"}
            self.remaining -= 1
            headers = {CREDITS_HEADER: str(self.remaining)} if self.remaining <= self.allowance / 2 else {}
            return True, headers

    def report(self) -> dict[str, int | None]:
        with self._lock:
            return {"allowance": self.allowance, "remaining": self.remaining}


def html_page(status: int, reason: str) -> bytes:
    return HTML_ERROR_PAGE.format(status=status, reason=reason).encode()
