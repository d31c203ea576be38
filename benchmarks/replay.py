"""A stand-in for the Zoho client that replays recorded API answers from local files.

The load benchmark runs the same dlt resources with this client instead of HTTP, so the distance
between a full load over the network and the floor (no fetch at all) shows. Records are recorded as
JSON lines in ascending Modified_Time, as the extractor asks for them, and read back one page at a
time, so replaying holds one page in memory, as fetching does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandbox import SandboxOrg

MODULES = ("Leads", "Deals")


def record(org: SandboxOrg, folder: Path) -> Path:
    """Write the org's records and small API answers (users, layouts, pipeline, currencies, deletion logs)
    under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for module in MODULES:
        rows = sorted(org.records(module), key=lambda r: (r["Modified_Time"], r["id"]))
        with open(folder / f"{module}.jsonl", "w") as out:
            for row in rows:
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
    small = {
        "users": {"users": org.users(), "info": {"more_records": False}},
        "settings/layouts": {"layouts": org.layouts("Deals")},
        "settings/pipeline": {"pipeline": org.pipelines()},
        "org/currencies": {"currencies": org.currencies_payload()},
        **{f"{m}/deleted": {"data": org.deleted_records(m), "info": {"more_records": False}} for m in MODULES},
    }
    (folder / "small.json").write_text(json.dumps(small))
    return folder


class ReplayClient:
    """Answers `get()` like `ZohoClient` from a folder written by `record()`."""

    credit_floor = 0
    credits_remaining: int | None = None

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._small = json.loads((folder / "small.json").read_text())
        self._files: dict[str, Any] = {}

    def below_floor(self) -> bool:
        return False

    def check_floor(self) -> None:
        return None

    def get(
        self, path: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        if path not in MODULES:
            return self._small.get(path)
        per_page = int((params or {}).get("per_page", 200))
        if path not in self._files:
            self._files[path] = open(self._folder / f"{path}.jsonl")
        lines = self._files[path]
        data = []
        for line in lines:
            data.append(json.loads(line))
            if len(data) == per_page:
                break
        more = len(data) == per_page
        return (
            {"data": data, "info": {"more_records": more, "next_page_token": "replay" if more else None}}
            if data
            else None
        )
