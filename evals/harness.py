"""`make eval`: the briefing written by a real model for N report dates, measured.

For each of the last N complete days of a warehouse (by default the demo's),
the team briefing and every owner's digest (`--owners` caps how many, largest
owners first) are built exactly as `insights.deliver` builds them (facts from the
marts, the model through the `ollama` client, the review, the audit), with the
model served by `evals.server` (llama.cpp, SmolLM2-135M by default) or by any
Ollama at OLLAMA_BASE_URL (`--ollama-url`). Nothing is stored or sent.

It prints one line a day and the totals:

    date | outcome (first try / retry / standard summary: reason) | seconds |
    prompt tokens (Llama 3.2 count) / num_ctx | answer tokens | attention facts
    in the message (picked by the model + added by code) / due | comments kept,
    dropped | figures not among the facts

and saves the run as JSON (`evals/runs/`), so two versions can be compared
with `--compare OLD.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from insights import facts as facts_mod
from insights import llm
from insights.audit import allowed_numbers, numbers
from insights.compose import compose, sanitize_name
from insights.deal_flags import flag_deals
from insights.deliver import checked_message, footer
from insights.facts import DayFacts
from insights.owner_facts import owner_digests
from insights.policy import attention_ids
from insights.settings import OllamaSettings
from warehouse import MARTS_SCHEMA, PROJECT_ROOT, ConfigError, connect

RUNS = PROJECT_ROOT / "evals" / "runs"


@dataclass
class Day:
    date: str
    digest: str  # "team", or "owner:<zoho user id>"
    outcome: str  # "first try", "retry", or "standard summary"
    reason: str | None
    seconds: float
    counted_tokens: int | None
    prompt_eval_count: int | None
    num_ctx: int | None
    answer_tokens: int | None
    attention_due: int
    attention_shown: int
    attention_picked: int  # by the model itself
    comments_kept: int
    comments_dropped: int
    dropped_reasons: list[str] = field(default_factory=list)
    attempt_failures: list[str] = field(
        default_factory=list
    )  # why each attempt was not used ("truncated": cut at num_predict)
    unfaithful_numbers: list[str] = field(default_factory=list)
    message: str = ""


def report_dates(n: int) -> list[dt.date]:
    """The last `n` complete days of kpi_daily (the latest day is today's, still partial)."""
    with connect("duckdb", read_only=True) as conn:
        rows = conn.execute(
            f"select distinct kpi_date from {MARTS_SCHEMA}.kpi_daily order by kpi_date desc limit ?", [n + 1]
        ).fetchall()
    days = [r[0] for r in rows][1:]
    return sorted(days)


def evaluate(day_date: dt.date, settings: OllamaSettings, owners: int | None = None) -> list[Day]:
    """The team briefing of `day_date` and its owners' digests (the `owners` with the most facts, all by default)."""
    with connect("duckdb", read_only=True) as conn:
        flags = flag_deals(conn, "duckdb", day_date)
        team = facts_mod.build(conn, "duckdb", day_date, flags=flags)
        digests = [("team", team, "Sales briefing")]
        by_owner = owner_digests(conn, "duckdb", day_date, flags=flags)
        ranked = sorted(by_owner.items(), key=lambda item: (-len(item[1].facts), item[0]))
        digests += [(f"owner:{owner}", day, "Your deals") for owner, day in ranked[:owners]]
        named = [
            (key, day, title, facts_mod.entity_names(conn, "duckdb", day.entities())) for key, day, title in digests
        ]
    return [evaluate_digest(day_date, key, day, names, title, settings) for key, day, title, names in named]


def evaluate_digest(
    day_date: dt.date, key: str, day: DayFacts, names: dict[tuple[str, str], str], title: str, settings: OllamaSettings
) -> Day:
    outcome = llm.choose(day, settings)
    checked = checked_message(day, outcome, names, title)
    due = attention_ids(day)
    shown = [
        fid
        for fid in due
        if day.get(fid).render(lambda ref: sanitize_name(names.get((ref.kind, ref.id)))) in checked.message.text
    ]
    picked = [p.fact_id for p in outcome.plan.risks if p.fact_id in due] if outcome.plan else []
    unfaithful: list[str] = []
    if outcome.plan is not None and checked.review is not None:  # the model's own message, before any fallback
        model_message = compose(day, checked.review.plan, names, footer(None), title)
        allowed = allowed_numbers(day)
        unfaithful = sorted({n for n in numbers(model_message.masked) if n not in allowed})
    last = outcome.last
    if checked.failure is not None:
        kind = "standard summary"
    else:
        kind = "first try" if len(outcome.attempts) == 1 else "retry"
    review = checked.review
    return Day(
        date=day_date.isoformat(),
        digest=key,
        outcome=kind,
        reason=checked.failure.code if checked.failure else None,
        seconds=round(outcome.seconds, 2),
        counted_tokens=last.counted_tokens if last else None,
        prompt_eval_count=last.prompt_tokens if last else None,
        num_ctx=last.num_ctx if last else None,
        answer_tokens=last.completion_tokens if last else None,
        attention_due=len(due),
        attention_shown=len(shown),
        attention_picked=len(set(picked)),
        comments_kept=review.comments_kept if review and checked.failure is None else 0,
        comments_dropped=len(review.dropped) if review and checked.failure is None else 0,
        dropped_reasons=[d.reason for d in review.dropped] if review and checked.failure is None else [],
        unfaithful_numbers=unfaithful,
        message=checked.message.text,
        attempt_failures=[a.failure.code for a in outcome.attempts if a.failure is not None],
    )


def _line(d: Day) -> str:
    outcome = d.outcome + (f": {d.reason}" if d.reason else "")
    tokens = f"{d.counted_tokens or '-'}/{d.num_ctx or '-'}"
    attention = f"{d.attention_shown}/{d.attention_due} ({d.attention_picked} by model)"
    who = "team" if d.digest == "team" else "owner " + d.digest[-4:]
    return (
        f"{d.date} {who:<10} {outcome:<34} {d.seconds:6.1f}s  {tokens:>11}  {d.answer_tokens or '-':>6}  {attention:<16}"
        f"  {d.comments_kept:>2} kept {d.comments_dropped:>2} dropped  {len(d.unfaithful_numbers)}"
    )


def _shown(value: Any) -> str:
    """A total as the comparison prints it: shares and seconds to four digits, so columns stay apart."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def totals(days: list[Day]) -> dict[str, Any]:
    """The run's figures: over every briefing, then for the team briefings and the owners' digests apart."""
    team = [d for d in days if d.digest == "team"]
    owners = [d for d in days if d.digest != "team"]
    return {
        **_totals(days),
        "team": _totals(team),
        "owners": _totals(owners),
        "truncated": sum(1 for d in days for r in d.attempt_failures if r == "truncated"),
    }


def _totals(days: list[Day]) -> dict[str, Any]:
    seconds = [d.seconds for d in days]
    due = sum(d.attention_due for d in days)
    return {
        "dates": len(days),
        "first_try": sum(d.outcome == "first try" for d in days),
        "retry": sum(d.outcome == "retry" for d in days),
        "standard_summary": sum(d.outcome == "standard summary" for d in days),
        "standard_reasons": sorted({d.reason for d in days if d.reason}),
        "unfaithful_numbers": sum(len(d.unfaithful_numbers) for d in days),
        "attention_coverage": (sum(d.attention_shown for d in days) / due) if due else 1.0,
        "attention_picked_by_model": (sum(d.attention_picked for d in days) / due) if due else 1.0,
        "comments_kept": sum(d.comments_kept for d in days),
        "comments_dropped": sum(d.comments_dropped for d in days),
        "seconds_median": round(statistics.median(seconds), 1) if seconds else None,
        "seconds_worst": max(seconds) if seconds else None,
        "prompt_tokens_max": max((d.counted_tokens or 0) for d in days) if days else None,
        "num_ctx_max": max((d.num_ctx or 0) for d in days) if days else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evals", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dates", type=int, default=14, help="how many report dates (default 14)")
    parser.add_argument("--ollama-url", help="evaluate an Ollama server instead of the local llama.cpp one")
    parser.add_argument("--model", help="the model name (default: the local server's, or OLLAMA_MODEL)")
    parser.add_argument("--out", type=Path, help="where to save the run (default evals/runs/<time>.json)")
    parser.add_argument(
        "--compare", type=Path, metavar="OLD.json", help="print this run's totals next to an older run's"
    )
    parser.add_argument("--show", type=int, default=2, help="print this many model-worded messages (default 2)")
    parser.add_argument(
        "--owners", type=int, help="word at most this many owners' digests a day (default: every owner)"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("DUCKDB_PATH", "demo.duckdb")
    try:
        dates = report_dates(args.dates)
    except Exception as exc:  # no warehouse yet
        print(
            f"error: cannot read the warehouse at DUCKDB_PATH={os.environ['DUCKDB_PATH']} ({str(exc).splitlines()[0]}); "
            "run `make demo` first",
            file=sys.stderr,
        )
        return 2
    server = None
    if args.ollama_url:
        settings = OllamaSettings(args.ollama_url, args.model or os.environ.get("OLLAMA_MODEL", "llama3.2:1b"))
    else:
        from evals import server as local

        problem = local.available()
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        started = time.perf_counter()
        server = local.OllamaServer(local.load({local.DEFAULT_MODEL: local.smollm2_path()})).start()  # type: ignore[dict-item]
        print(
            f"model server: {local.DEFAULT_MODEL} on llama.cpp at {server.url} "
            f"(loaded in {time.perf_counter() - started:.1f}s)",
            file=sys.stderr,
        )
        settings = OllamaSettings(server.url, args.model or local.DEFAULT_MODEL)
    try:
        configured = OllamaSettings.from_env()  # OLLAMA_NUM_CTX and OLLAMA_TIMEOUT apply here too
        settings = OllamaSettings(settings.base_url, settings.model, configured.max_num_ctx, configured.timeout)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(
        f"{'date':<10} {'digest':<10} {'outcome':<34} {'time':>7}  {'prompt/ctx':>11}  {'answer':>6}  {'attention':<16}  comments       figures off"
    )
    days: list[Day] = []
    try:
        for date in dates:
            for day in evaluate(date, settings, args.owners):
                days.append(day)
                print(_line(day), flush=True)
    finally:
        if server is not None:
            server.stop()
    summary = totals(days)
    for label, part in (("team briefings", summary["team"]), ("owners' digests", summary["owners"])):
        print(
            f"\n{label}: {part['dates']}; model-worded first try {part['first_try']}, after a retry {part['retry']}, "
            f"standard summary {part['standard_summary']} {part['standard_reasons'] or ''}; seconds median "
            f"{part['seconds_median']}, worst {part['seconds_worst']}"
        )
    print(f"answers cut at num_predict: {summary['truncated']}")
    print(
        f"figures not among the facts: {summary['unfaithful_numbers']}; facts needing attention in the message: "
        f"{summary['attention_coverage']:.0%} (picked by the model: {summary['attention_picked_by_model']:.0%})"
    )
    print(
        f"comments kept {summary['comments_kept']}, dropped {summary['comments_dropped']}; seconds median "
        f"{summary['seconds_median']}, worst {summary['seconds_worst']}; prompt up to {summary['prompt_tokens_max']} "
        f"tokens (Llama 3.2), num_ctx up to {summary['num_ctx_max']}"
    )
    shown = [d for d in days if d.outcome != "standard summary"][: args.show]
    for d in shown:
        print(f"\n--- {d.date} ({d.outcome})\n{d.message}")

    out = args.out or RUNS / f"{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"model": settings.model, "totals": summary, "days": [asdict(d) for d in days]}, indent=2)
    )
    print(f"\nsaved {out.relative_to(PROJECT_ROOT) if out.is_relative_to(PROJECT_ROOT) else out}")
    if args.compare:
        old = json.loads(args.compare.read_text())["totals"]
        print(f"\n{'':<28}{'before':>12} {'now':>12}")
        for key, value in summary.items():
            if not isinstance(value, dict):
                print(f"{key:<28}{_shown(old.get(key)):>12} {_shown(value):>12}")
    return 0
