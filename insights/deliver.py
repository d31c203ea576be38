"""Build the daily sales briefing from the marts, have the local model pick what matters, check it, store it, send it.

    python -m insights.deliver [--date YYYY-MM-DD] [--target duckdb|postgres] [--dry-run] [--force]

Stages (each timed on stderr): facts (computed in code from analytics.kpi_daily,
deals, leads, pipeline_by_stage) -> model (Ollama picks facts by id; any failure
falls back to a deterministic briefing) -> review (every fact that needs
attention is listed, each fact once, comments that add nothing or state a
quantity dropped) -> audit (every number in the message must be one of the
facts') -> store (one row in analytics.ai_summaries) -> send (WhatsApp through
Twilio, unless --dry-run).

The default date is the last complete day: the latest kpi_date before today in
CRM_TIMEZONE (or the latest kpi_date when the marts hold nothing earlier).

Environment: DUCKDB_PATH or DATABASE_URL (the warehouse), CRM_TIMEZONE,
OLLAMA_BASE_URL (default http://localhost:11434), OLLAMA_MODEL (default
llama3.2:1b), OLLAMA_NUM_CTX (the largest context to ask for, default 8192),
OLLAMA_TIMEOUT (seconds one answer may take, default 90), and for sending TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN,
TWILIO_FROM_NUMBER, RECIPIENT_PHONE_NUMBER (comma-separated). A missing Twilio
variable stops the run before the model is called; --dry-run needs none of them.

While the model thinks (minutes on a small CPU) or Twilio is waited on, a line
"still waiting for <model> (Ns)" goes to stderr every HEARTBEAT_SECONDS
(default 10), so a terminal or a CI log never looks hung.

The last line says what happened to each recipient ("sent to 2 of 2
recipients", "already sent to 2 of 2 recipients; nothing new was sent", ...).
Exit status: 0 briefing stored and every recipient has it (sent now or by an
earlier run), or a dry run; 1 the run failed: a recipient's send failed or is
unknown, another delivery is running on the same DuckDB file, or the warehouse
failed mid-run (a refused or dropped connection, a lock held by another
writer); 2 configuration: a setting is missing or wrong, including credentials
Twilio or the warehouse refuse, an unknown host or database, a DuckDB file that
cannot be opened, or marts that were never built.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

from insights import facts as facts_mod
from insights import llm, store
from insights.audit import Verdict, audit
from insights.compose import MAX_LENGTH, Message, compose, fallback_plan, whatsapp_length
from insights.facts import DayFacts, fmt_date
from insights.review import Review, settle
from insights.settings import OllamaSettings, TwilioSettings
from warehouse import TARGETS, ConfigError, Target, connect, database_errors, error_reason

# How libpq and DuckDB word a failure that only a setting fixes (psycopg2 gives connection failures no
# SQLSTATE, so the words are all there is); with SQLSTATE classes 28 (authorization) and 3D (no such
# database) and 42501 (no privilege). Anything else a driver raises (a refused or dropped connection, a
# timeout, a file lock) fails this run without saying a setting is wrong.
SETTING_PROBLEMS = re.compile(
    r'password authentication failed|(database|role) "[^"]*" does not exist|could not translate host name'
    r"|no pg_hba\.conf entry|invalid dsn|sslmode|does not support ssl|tenant or user not found|cannot open file",
    re.IGNORECASE,
)
HEARTBEAT_SECONDS = 10.0  # the longest a waiting run stays silent; HEARTBEAT_SECONDS in the environment overrides it
MODEL_FOOTER = "Figures computed from the CRM; picked and annotated by the AI assistant."
# What the reader is told when the standard summary replaces the model's (no digits: the audit checks the footer too).
FALLBACK_NOTICES = {
    "ollama_unreachable": "the AI service was not reachable",
    "model_not_found": "the AI model is not installed",
    "timeout": "the AI service took too long",
    "audit_failed": "the AI answer failed the figure check",
    "prompt_too_long": "too many facts for the AI model",
    "context_overflow": "too many facts for the AI model",
    "ollama_error": "the AI service could not be used",
}


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


@contextmanager
def _stage(name: str) -> Iterator[list[str]]:
    """Time a stage; the body appends its one-line result to the yielded list."""
    started = time.perf_counter()
    note: list[str] = []
    yield note
    _log(f"{'[' + name + ']':8}{time.perf_counter() - started:6.2f}s  {' '.join(note)}")


def heartbeat_seconds() -> float:
    """HEARTBEAT_SECONDS from the environment (tests make it short), else the default."""
    raw = os.environ.get("HEARTBEAT_SECONDS", "").strip()
    if not raw:
        return HEARTBEAT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigError(f"HEARTBEAT_SECONDS must be a positive number of seconds (got {raw!r})")
    return seconds


@contextmanager
def _still_waiting(what: str, every: float) -> Iterator[None]:
    """Say every `every` seconds that the run is still waiting for `what`, until the block ends.

    The model's answer comes in one piece (non-streaming, so it can be validated whole) after up to
    OLLAMA_TIMEOUT seconds per attempt; without this line a terminal looks hung for minutes.
    """
    done = threading.Event()
    started = time.perf_counter()

    def beat() -> None:
        while not done.wait(every):
            _log(f"still waiting for {what} ({time.perf_counter() - started:.0f}s)")

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def is_setting_problem(exc: BaseException) -> bool:
    """Whether a driver error means a setting is wrong (exit 2) rather than a run that failed (exit 1)."""
    code = getattr(exc, "pgcode", None) or ""
    if code[:2] in ("28", "3D") or code == "42501":
        return True
    return SETTING_PROBLEMS.search(error_reason(exc)) is not None


def footer(failure: llm.Failure | None) -> str:
    if failure is None:
        return MODEL_FOOTER
    notice = FALLBACK_NOTICES.get(failure.code, "the AI answer was not usable")
    return f"Standard summary ({notice}). Figures computed from the CRM."


@dataclass(frozen=True)
class Checked:
    """The message to send, its audit, why it is the standard one (if it is), and how the model's plan was settled."""

    message: Message
    verdict: Verdict
    failure: llm.Failure | None
    review: Review | None


def checked_message(day: DayFacts, outcome: llm.Outcome, names: Mapping[tuple[str, str], str]) -> Checked:
    """The model's briefing, settled by the editorial rules, if it passes the audit; else the standard one."""
    failure = outcome.failure
    review = None
    if outcome.plan is not None:
        review = settle(outcome.plan, day)
        message = compose(day, review.plan, names, footer(None))
        verdict = audit(message, day)
        if verdict.ok:
            return Checked(message, verdict, None, review)
        failure = llm.Failure("audit_failed", verdict.problem or "")
    assert failure is not None
    message = compose(day, fallback_plan(day), names, footer(failure))
    verdict = audit(message, day)
    if not verdict.ok:  # the standard briefing is correct by construction: this is a bug, never send it
        raise RuntimeError(f"the standard briefing failed its own audit: {verdict.problem}")
    return Checked(message, verdict, failure, review)


def _attempts_note(outcome: llm.Outcome) -> str:
    """'first try, prompt 1,171 tokens of num_ctx 2048, answer 212 tokens, 9.8s' for the model stage's line."""
    last = outcome.last
    if last is None:
        return ""
    tries = "first try" if len(outcome.attempts) == 1 else f"{len(outcome.attempts)} attempts"
    return (f"{tries}, prompt {last.counted_tokens:,} tokens of num_ctx {last.num_ctx:,}"
            f" (server counted {last.prompt_tokens}), answer {last.completion_tokens} tokens")


def _recipients_for_display() -> tuple[str, str]:
    raw = os.environ.get("RECIPIENT_PHONE_NUMBER", "").strip()
    to = ", ".join(n.strip() for n in raw.split(",") if n.strip()) or "(RECIPIENT_PHONE_NUMBER not set)"
    sender = os.environ.get("TWILIO_FROM_NUMBER", "").strip() or "(TWILIO_FROM_NUMBER not set)"
    return to, sender


def run(report_date: dt.date | None, target: Target, *, dry_run: bool, force: bool) -> int:
    started = time.perf_counter()
    ollama = OllamaSettings.from_env()
    twilio = None if dry_run else TwilioSettings.from_env()  # fail fast, before paying for the model
    every = heartbeat_seconds()

    with _stage("facts") as note:
        tz = facts_mod.org_timezone()
        with connect(target, read_only=True) as conn:
            if report_date is None:
                report_date = facts_mod.default_report_date(conn, target, dt.datetime.now(tz).date())
            day: DayFacts = facts_mod.build(conn, target, report_date, tz)
            names = facts_mod.entity_names(conn, target, day.entities())
        note.append(f"{len(day.facts)} facts for {report_date} from {target}")

    with _stage("model") as note:
        with _still_waiting(ollama.model, every):
            outcome = llm.choose(day, ollama)
        if outcome.plan is not None:
            note.append(f"{ollama.model} answered: {_attempts_note(outcome)}")
        else:
            note.append(f"no usable answer from {ollama.model}: {outcome.failure}")

    with _stage("audit") as note:
        checked = checked_message(day, outcome, names)
        message, verdict, failure, review = checked.message, checked.verdict, checked.failure, checked.review
        if review is not None:
            note.append(f"{review.comments_kept} comment(s) kept, {len(review.dropped)} dropped, "
                        f"{len(review.added)} fact(s) needing attention added;")
        note.append(f"{verdict.checked} numbers checked; " + ("standard summary" if failure else "the model's briefing passed"))
    if failure is not None:
        _log(f"notice: using the standard briefing because {failure}")

    with _stage("store") as note:
        summary = store.Summary(
            report_date=day.report_date,
            target=target,
            model=ollama.model,
            prompt_hash=outcome.prompt.hash if outcome.prompt else None,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            llm_seconds=round(outcome.seconds, 3),
            total_seconds=round(time.perf_counter() - started, 3),
            facts=day.as_json(),
            model_json=outcome.model_json,
            message=message.text,
            used_fallback=failure is not None,
            fallback_reason=str(failure) if failure else None,
            dry_run=dry_run,
            attempts=[a.as_json() for a in outcome.attempts],
            review=review.as_json() if review else None,
        )
        note.append(f"{store.TABLE} row {store.save(target, summary)}")

    length = whatsapp_length(message.text)
    status = 0
    outcome_text = "dry run"
    with _stage("send") as note:
        if dry_run:
            to, sender = _recipients_for_display()
            print(f"DRY RUN: nothing was sent.\nTo: {to}\nFrom: {sender}\nLength: {length} of {MAX_LENGTH} characters")
            print("-" * 40)
            print(message.text)
            print("-" * 40)
            note.append("dry run: nothing sent")
        else:
            from insights import whatsapp

            assert twilio is not None
            with _still_waiting("Twilio", every):
                deliveries = whatsapp.send_briefing(message.text, day.report_date, target, twilio, force=force,
                                                    summary_id=summary.summary_id)
            for d in deliveries:
                error = f"error {d.error_code}: " if d.error_code else ""
                explanation = f" ({error}{d.explanation or ''})" if error or d.explanation else ""
                _log(f"  {d.recipient}: {d.status}" + (f" {d.message_sid}" if d.message_sid else "") + explanation)
            status, outcome_text = whatsapp.outcome(deliveries)
            note.append(outcome_text)

    kind = f"standard summary ({failure.code})" if failure else f"picked by {ollama.model}"
    _log(
        f"done in {time.perf_counter() - started:.2f}s: briefing for {fmt_date(day.report_date)}, {kind}, "
        f"{length} characters, {outcome_text}"
    )
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m insights.deliver", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--date", type=dt.date.fromisoformat, metavar="YYYY-MM-DD",
                        help="the day to report on (default: the last complete day in CRM_TIMEZONE)")
    parser.add_argument("--target", choices=TARGETS, default="duckdb", help="the warehouse to read and write (default: duckdb)")
    parser.add_argument("--dry-run", action="store_true",
                        help="build and store the briefing, print what would be sent, send nothing")
    parser.add_argument("--force", action="store_true", help="send again even to recipients who already got this day's briefing")
    args = parser.parse_args(argv)
    from insights.ledger import DeliveryBusy, DeliveryLedger

    try:
        # One delivery at a time per DuckDB file: a second one stops here, before any work, with one clear line.
        with DeliveryLedger(args.target).claim_warehouse():
            return run(args.date, args.target, dry_run=args.dry_run, force=args.force)
    except DeliveryBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except database_errors() as exc:
        setting = "DUCKDB_PATH" if args.target == "duckdb" else "DATABASE_URL"
        if is_setting_problem(exc):
            print(f"error: a setting of the {args.target} warehouse is wrong: {error_reason(exc)}", file=sys.stderr)
            print(f"hint: check {setting} (make check names what is wrong)", file=sys.stderr)
            return 2
        print(f"error: the {args.target} warehouse failed: {error_reason(exc)}", file=sys.stderr)
        cause = "that no other process holds the file" if args.target == "duckdb" else "that the server is up"
        print(f"hint: run it again (a briefing already sent is not sent twice); if it keeps failing, check {setting} "
              f"and {cause}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
