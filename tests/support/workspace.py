"""A user's setup for one test or benchmark: its own warehouse, dlt folder and dbt profile.

`Workspace.env` is what the user would have exported; `Workspace.run()` executes
a command the way they would type it, from the project root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from warehouse import PROJECT_ROOT, libpq_env

# Settings a developer may have exported for their own org must never leak into a test.
_USER_SETTINGS = (
    "ZOHO_",
    "SOURCES__",
    "DESTINATION__",
    "PG",
    "TWILIO_",
    "OLLAMA_",
    "RECIPIENT",
    "API_TOKEN",
    "DATABASE_URL",
    "CRM_TIMEZONE",
    "PUBLIC_BASE_URL",
    "BRIEFING_BUDGET",
)


@dataclass
class Workspace:
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def duckdb_path(self) -> Path:
        return Path(self.env["DUCKDB_PATH"])

    def use_postgres(self, url: str) -> None:
        self.env["DATABASE_URL"] = url
        self.env.update(libpq_env(url))

    def command(self, *args: str) -> list[str]:
        """`python ...` and `dbt ...` resolved to this interpreter's virtualenv."""
        if args[0] in ("python", "dbt"):
            exe = sys.executable if args[0] == "python" else str(Path(sys.executable).with_name("dbt"))
            return [exe, *args[1:]]
        return list(args)

    def run(self, *args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run(
            self.command(*args),
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
            )
        return result

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The command started as `run` runs it, but in the background: for a test that kills it, or runs
        something beside it, while it works."""
        return subprocess.Popen(
            self.command(*args),
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def dbt_build(self, target: str, *options: str) -> subprocess.CompletedProcess:
        return self.run(
            "dbt", "build", "--target", target, "--target-path", str(self.root / "dbt" / f"target-{target}"), *options
        )


def make_workspace(root: Path) -> Workspace:
    profiles = root / "dbt"
    profiles.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "profiles.example.yml", profiles / "profiles.yml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(_USER_SETTINGS)}
    # A developer's own recipients.yml in the project folder must not reach a test: each workspace has its own.
    (root / "recipients.yml").write_text("people: []\n")
    env.update(
        RECIPIENTS_FILE=str(root / "recipients.yml"),
        DUCKDB_PATH=str(root / "warehouse.duckdb"),
        DLT_DATA_DIR=str(root / "dlt"),
        DBT_PROFILES_DIR=str(profiles),
        DBT_LOG_PATH=str(profiles / "logs"),
        RUNTIME__DLTHUB_TELEMETRY="false",
        DO_NOT_TRACK="1",
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        PYTHONUNBUFFERED="1",
    )
    return Workspace(root=root, env=env)
