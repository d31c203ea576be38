"""`analytics.ai_summaries`: one row per briefing built (a run builds one per digest), on DuckDB and Postgres alike.

The row keeps what is needed to explain a message later: the facts (with their
values), the prompt's hash, the model's raw answer, the message actually
built, why the deterministic fallback was used when it was, each request to
the model (seed, prompt and answer tokens, time, what went wrong) and how the
answer was settled (comments kept and dropped with the reason, facts that need
attention added by code). It is written
before sending, so a failed send never loses what was generated.

`dry_run` tells a briefing built with `--dry-run` (printed, never sent) from one
built for sending; readers that want "the briefing the team got" skip dry runs.
Whether a send then reached each recipient is the delivery ledger's business
(`analytics.briefing_deliveries`).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from warehouse import MARTS_SCHEMA, Target, connect, placeholder

TABLE = f"{MARTS_SCHEMA}.ai_summaries"

# Portable DDL: both DuckDB and Postgres accept these types.
DDL = f"""
create table if not exists {TABLE} (
    summary_id text primary key,
    created_at timestamptz not null,
    report_date date not null,
    target text not null,
    model text,
    prompt_hash text,
    prompt_tokens integer,
    completion_tokens integer,
    llm_seconds double precision,
    total_seconds double precision,
    facts_json text not null,
    model_json text,
    message text not null,
    used_fallback boolean not null,
    fallback_reason text,
    dry_run boolean,
    attempts_json text,
    review_json text,
    digest text
)
"""
# Columns added after the first release, for tables created before them (both engines accept this form).
ADDED_COLUMNS = ("attempts_json text", "review_json text", "digest text")

COLUMNS = (
    "summary_id",
    "created_at",
    "report_date",
    "target",
    "model",
    "prompt_hash",
    "prompt_tokens",
    "completion_tokens",
    "llm_seconds",
    "total_seconds",
    "facts_json",
    "model_json",
    "message",
    "used_fallback",
    "fallback_reason",
    "dry_run",
    "attempts_json",
    "review_json",
    "digest",
)


@dataclass(frozen=True)
class Summary:
    report_date: dt.date
    target: Target
    model: str | None
    prompt_hash: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    llm_seconds: float | None
    total_seconds: float
    facts: dict[str, Any]
    model_json: str | None
    message: str
    used_fallback: bool
    fallback_reason: str | None
    dry_run: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)  # per model request: seed, tokens, timing, failure
    review: dict[str, Any] | None = None  # comments kept and dropped (with why), facts needing attention added
    digest: str = "team"  # whose briefing: the team's, or an owner's (`owner:<zoho user id>`)
    summary_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def ensure_table(conn: Any) -> None:
    cur = conn.cursor()
    try:
        cur.execute(f"create schema if not exists {MARTS_SCHEMA}")
        cur.execute(DDL)
        for column in ADDED_COLUMNS:
            cur.execute(f"alter table {TABLE} add column if not exists {column}")
    finally:
        cur.close()


def save(target: Target, summary: Summary) -> str:
    """Insert one row (creating the table if needed); returns the summary_id."""
    values = {
        **{c: getattr(summary, c) for c in COLUMNS if not c.endswith("_json")},
        "facts_json": json.dumps(summary.facts, sort_keys=True),
        "model_json": summary.model_json,
        "attempts_json": json.dumps(summary.attempts),
        "review_json": json.dumps(summary.review) if summary.review is not None else None,
        "created_at": summary.created_at.isoformat(),
    }
    p = placeholder(target)
    marks = ", ".join(f"cast({p} as timestamptz)" if c == "created_at" else p for c in COLUMNS)
    with connect(target) as conn:
        ensure_table(conn)
        cur = conn.cursor()
        try:
            cur.execute(f"insert into {TABLE} ({', '.join(COLUMNS)}) values ({marks})", [values[c] for c in COLUMNS])
        finally:
            cur.close()
        conn.commit()
    return summary.summary_id
