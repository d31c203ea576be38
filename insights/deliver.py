"""Build each person's briefing from the marts, have the local model pick what matters, check it, store it, send it.

    python -m insights.deliver [--date YYYY-MM-DD] [--target duckdb|postgres] [--dry-run [--json]] [--force]

Who gets what comes from the recipients (RECIPIENTS_FILE, RECIPIENT_PHONE_NUMBER;
see `insights.recipients`): managers the team briefing, each owner a digest of
their own deals, an owner with nothing to report no message at all.

Stages (each timed on stderr): facts (computed in code from analytics.kpi_daily,
deals, leads, pipeline_by_stage and the deals' history, for the team and each
owner) -> model, once per digest (Ollama picks facts by id; any failure falls
back to a deterministic briefing; BRIEFING_BUDGET_SECONDS bounds the model's
time for the whole day) -> review (every fact that needs attention is listed,
each fact once, comments that add nothing or state a quantity dropped) ->
audit (every number in the message must be one of the facts') -> store (one
row per digest in analytics.ai_summaries) -> send (WhatsApp through Twilio:
the full text inside a person's 24-hour window, the approved template outside
it; see `insights.whatsapp`), unless --dry-run. Inside the window the team
briefing carries the day's main chart, through a signed link to the API under
PUBLIC_BASE_URL (`insights.chart_links`); the send stage says in one line whether
it does, and why not (no PUBLIC_BASE_URL, or the link does not answer).

The default date is yesterday in the org's time: the last day kpi_daily marks
complete before the org's today, which is today in CRM_TIMEZONE, or the last day
of the marts when the org's clock runs ahead of this machine's (the latest
kpi_date when the marts hold nothing complete).

Environment: DUCKDB_PATH or DATABASE_URL (the warehouse), CRM_TIMEZONE,
OLLAMA_BASE_URL (default http://localhost:11434), OLLAMA_MODEL (default
llama3.2:1b), OLLAMA_NUM_CTX (the largest context to ask for, default 8192),
OLLAMA_TIMEOUT (seconds one answer may take, default 90), BRIEFING_BUDGET_SECONDS
(default 900), and for sending TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN,
TWILIO_FROM_NUMBER, the recipients, TWILIO_TEMPLATE_SID and PUBLIC_BASE_URL.
A missing Twilio variable stops the run before the model is called; --dry-run
needs none of them, and --dry-run --json prints what would be sent as one JSON
document on stdout (progress stays on stderr).

While the model thinks (minutes on a small CPU) or Twilio is waited on, a line
"still waiting for <model> (Ns)" goes to stderr every HEARTBEAT_SECONDS
(default 10), so a terminal or a CI log never looks hung.

The last line says what happened to each recipient ("sent to 2 of 2
recipients", "already sent to 2 of 2 recipients; nothing new was sent", ...);
the lines before it name any earlier day whose briefing never went out.
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
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from insights import facts as facts_mod
from insights import llm, store
from insights.audit import Verdict, allowed_numbers, audit, numbers
from insights.compose import Message, compose, fallback_plan, template_variables, whatsapp_length
from insights.facts import DayFacts, fmt_date
from insights.ledger import TEAM, DeliveryLedger
from insights.ledger import owner_digest as owner_digest_key
from insights.prompt import Plan
from insights.recipients import Recipient, load_recipients
from insights.review import Review, settle
from insights.settings import OllamaSettings, TwilioSettings, seconds_setting
from insights.whatsapp import split_parts
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
    "budget": "the time for the AI model ran out",
}
MIN_MODEL_SECONDS = 5.0  # a digest gets the model only if this much of the day's budget is left


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
    return seconds_setting("HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)


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
    plan: Plan  # what the message shows: the model's plan as settled, or the standard one


def checked_message(
    day: DayFacts, outcome: llm.Outcome, names: Mapping[tuple[str, str], str], title: str = "Sales briefing"
) -> Checked:
    """The model's briefing, settled by the editorial rules, if it passes the audit; else the standard one."""
    failure = outcome.failure
    review = None
    if outcome.plan is not None:
        review = settle(outcome.plan, day)
        message = compose(day, review.plan, names, footer(None), title)
        verdict = audit(message, day)
        if verdict.ok:
            return Checked(message, verdict, None, review, review.plan)
        failure = llm.Failure("audit_failed", verdict.problem or "")
    assert failure is not None
    plan = fallback_plan(day)
    message = compose(day, plan, names, footer(failure), title)
    verdict = audit(message, day)
    if not verdict.ok:  # the standard briefing is correct by construction: this is a bug, never send it
        raise RuntimeError(f"the standard briefing failed its own audit: {verdict.problem}")
    return Checked(message, verdict, failure, review, plan)


def _attempts_note(outcome: llm.Outcome) -> str:
    """'first try, prompt 1,171 tokens of num_ctx 2048, answer 212 tokens, 9.8s' for the model stage's line."""
    last = outcome.last
    if last is None:
        return ""
    tries = "first try" if len(outcome.attempts) == 1 else f"{len(outcome.attempts)} attempts"
    return (
        f"{tries}, prompt {last.counted_tokens:,} tokens of num_ctx {last.num_ctx:,}"
        f" (server counted {last.prompt_tokens}), answer {last.completion_tokens} tokens"
    )


DEFAULT_BUDGET_SECONDS = 900.0  # BRIEFING_BUDGET_SECONDS: the model's time for all of a day's digests


def budget_seconds() -> float:
    """BRIEFING_BUDGET_SECONDS from the environment, else the default: the time the model may take for every
    digest of the day together. Past it, the digests left get the standard summary, so a slow model on a
    small runner cannot hold twenty owners' briefings back past the morning."""
    return seconds_setting("BRIEFING_BUDGET_SECONDS", DEFAULT_BUDGET_SECONDS, zero_allowed=True)


@dataclass(frozen=True)
class Digest:
    """One briefing of the day: the team's (for the managers) or an owner's, with who gets it."""

    key: str  # ledger.TEAM or owner_digest(user id)
    day: DayFacts
    names: Mapping[tuple[str, str], str]
    recipients: tuple[Recipient, ...]
    title: str = "Sales briefing"
    what: str = "the sales briefing"  # how the template names it


@dataclass(frozen=True)
class Written:
    """A digest worded, checked and stored."""

    digest: Digest
    checked: Checked
    outcome: llm.Outcome
    summary_id: str
    template_variables: dict[str, str]


def _recipients(dry_run: bool, twilio: TwilioSettings | None) -> tuple[Recipient, ...]:
    """Who gets what: the configured recipients; a dry run without any shows the team briefing to nobody."""
    if twilio is not None:
        return twilio.recipients
    try:
        return load_recipients()
    except ConfigError as exc:
        _log(f"notice: the recipients cannot be read ({exc}); showing the team briefing only")
        return ()


def gather(
    conn: Any, target: Target, report_date: dt.date, tz: Any, recipients: tuple[Recipient, ...]
) -> tuple[list[Digest], list[tuple[Recipient, str]]]:
    """The day's digests and who gets each; and the owners with nothing to report (no message, said why)."""
    from insights.deal_flags import flag_deals

    managers = tuple(r for r in recipients if r.role == "manager")
    owners = tuple(r for r in recipients if r.role == "owner")
    flags = flag_deals(conn, target, report_date)  # one read of the deals' history for the team and every owner
    digests: list[Digest] = []
    if managers or not recipients:
        day = facts_mod.build(conn, target, report_date, tz, flags=flags)
        digests.append(Digest(TEAM, day, facts_mod.entity_names(conn, target, day.entities()), managers))
    quiet: list[tuple[Recipient, str]] = []
    if owners:
        from insights.owner_facts import owner_digests
        from insights.recipients import resolve_owners, users_in_warehouse

        resolved, problems = resolve_owners(owners, users_in_warehouse(conn))
        unknown = [p for p in problems if not getattr(p, "warning", False)]
        if unknown:
            raise ConfigError("; ".join(unknown))
        by_owner: dict[str, list[Recipient]] = {}
        for recipient in owners:
            by_owner.setdefault(resolved[recipient.whatsapp], []).append(recipient)
        days = owner_digests(conn, target, report_date, tz, flags=flags)
        for owner_id, people in by_owner.items():
            day = days.get(owner_id)
            if day is None:
                quiet.extend((person, owner_digest_key(owner_id)) for person in people)
                continue
            digests.append(
                Digest(
                    owner_digest_key(owner_id),
                    day,
                    facts_mod.entity_names(conn, target, day.entities()),
                    tuple(people),
                    title="Your deals",
                    what="the digest of your deals",
                )
            )
    return digests, quiet


def write(
    digest: Digest, ollama: OllamaSettings, target: Target, *, deadline: float, dry_run: bool, every: float
) -> Written:
    """Word one digest with the model (within what is left of the day's budget), check it, store it."""
    started = time.perf_counter()
    remaining = deadline - time.monotonic()
    if remaining < MIN_MODEL_SECONDS:
        outcome = llm.Outcome(
            None, failure=llm.Failure("budget", "BRIEFING_BUDGET_SECONDS was used up by the digests before this one")
        )
    else:
        with _still_waiting(ollama.model, every):
            outcome = llm.choose(digest.day, replace(ollama, timeout=min(ollama.timeout, remaining)))
    checked = checked_message(digest.day, outcome, digest.names, digest.title)
    variables, masked = template_variables(digest.day, checked.plan, digest.names, digest.what)
    strangers = set(numbers(" ".join(masked.values()))) - allowed_numbers(digest.day)
    if strangers:  # the template's lines are the facts' sentences: a stranger here is a bug, never send it
        raise RuntimeError(f"the template's variables carry numbers that are not facts: {sorted(strangers)}")
    summary = store.Summary(
        report_date=digest.day.report_date,
        target=target,
        model=ollama.model,
        prompt_hash=outcome.prompt.hash if outcome.prompt else None,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        llm_seconds=round(outcome.seconds, 3),
        total_seconds=round(time.perf_counter() - started, 3),
        facts=digest.day.as_json(),
        model_json=outcome.model_json,
        message=checked.message.text,
        used_fallback=checked.failure is not None,
        fallback_reason=str(checked.failure) if checked.failure else None,
        dry_run=dry_run,
        attempts=[a.as_json() for a in outcome.attempts],
        review=checked.review.as_json() if checked.review else None,
        digest=digest.key,
    )
    store.save(target, summary)
    return Written(digest, checked, outcome, summary.summary_id, variables)


def _who(recipient: Recipient) -> str:
    return (
        f"{recipient.name} ({recipient.whatsapp.removeprefix('whatsapp:')})"
        if recipient.name
        else recipient.whatsapp.removeprefix("whatsapp:")
    )


def dry_run_document(
    written: list[Written], quiet: list[tuple[Recipient, str]], report_date: dt.date
) -> dict[str, Any]:
    """What the run would send, for scripts and review: one entry per recipient and digest."""
    messages = []
    for w in written:
        for recipient in w.digest.recipients or (None,):
            messages.append(
                {
                    "recipient": recipient.whatsapp if recipient else None,
                    "name": recipient.name if recipient else None,
                    "role": recipient.role if recipient else "manager",
                    "owner": w.digest.key.removeprefix("owner:") if w.digest.key != TEAM else None,
                    "digest": w.digest.key,
                    "standard_summary": w.checked.failure is not None,
                    "fallback_reason": str(w.checked.failure) if w.checked.failure else None,
                    "session": {"text": w.checked.message.text, "parts": split_parts(w.checked.message.text)},
                    "template": {"variables": w.template_variables},
                    "summary_id": w.summary_id,
                }
            )
    return {
        "report_date": report_date.isoformat(),
        "dry_run": True,
        "messages": messages,
        "nothing_to_report": [{"recipient": r.whatsapp, "name": r.name, "digest": key} for r, key in quiet],
    }


def run(report_date: dt.date | None, target: Target, *, dry_run: bool, force: bool, as_json: bool = False) -> int:
    started = time.perf_counter()
    ollama = OllamaSettings.from_env()
    twilio = None if dry_run else TwilioSettings.from_env()  # fail fast, before paying for the model
    recipients = _recipients(dry_run, twilio)
    every = heartbeat_seconds()
    deadline = time.monotonic() + budget_seconds()

    with _stage("facts") as note:
        tz = facts_mod.org_timezone()
        with connect(target, read_only=True) as conn:
            if report_date is None:
                report_date = facts_mod.default_report_date(conn, target, dt.datetime.now(tz).date())
            digests, quiet = gather(conn, target, report_date, tz, recipients)
        owners = sum(d.key != TEAM for d in digests)
        note.append(
            f"{sum(len(d.day.facts) for d in digests)} facts for {report_date} from {target}: "
            f"{'the team briefing' if digests and digests[0].key == TEAM else 'no team briefing'}"
            f"{f', {owners} owner digest(s)' if owners else ''}"
            f"{f', {len(quiet)} owner(s) with nothing to report' if quiet else ''}"
        )

    written: list[Written] = []
    for digest in digests:
        with _stage("model") as note:
            w = write(digest, ollama, target, deadline=deadline, dry_run=dry_run, every=every)
            written.append(w)
            name = "team" if digest.key == TEAM else digest.key
            if w.outcome.plan is not None:
                note.append(f"{name}: {ollama.model} answered: {_attempts_note(w.outcome)};")
            else:
                note.append(f"{name}: no usable answer from {ollama.model}: {w.outcome.failure};")
            review, verdict = w.checked.review, w.checked.verdict
            if review is not None:
                note.append(
                    f"{review.comments_kept} comment(s) kept, {len(review.dropped)} dropped, "
                    f"{len(review.added)} fact(s) needing attention added;"
                )
            note.append(
                f"{verdict.checked} numbers checked; "
                + ("standard summary" if w.checked.failure else "the model's briefing passed")
            )
        if w.checked.failure is not None:
            whose = "" if digest.key == TEAM else f" for {digest.key}"
            _log(f"notice: using the standard briefing{whose} because {w.checked.failure}")

    status, outcome_text = 0, "dry run"
    with _stage("send") as note:
        if dry_run:
            if as_json:
                print(json.dumps(dry_run_document(written, quiet, report_date), indent=2, ensure_ascii=False))
            else:
                _print_dry_run(written, quiet)
            note.append("dry run: nothing sent")
        else:
            from insights import whatsapp

            assert twilio is not None
            chart = None
            if any(w.digest.key == TEAM and w.digest.recipients for w in written):
                from insights.chart_links import briefing_chart

                chart, said = briefing_chart(twilio, report_date)  # once a run: the same picture for every manager
                _log(f"chart: {said}")
            outgoing = [
                whatsapp.Outgoing(
                    r.whatsapp,
                    w.checked.message.text,
                    w.digest.key,
                    w.template_variables,
                    w.summary_id,
                    media_url=chart if w.digest.key == TEAM else None,
                )
                for w in written
                for r in w.digest.recipients
            ]
            with _still_waiting("Twilio", every):
                deliveries = (
                    whatsapp.send_digests(outgoing, report_date, target, twilio, force=force) if outgoing else []
                )
                ledger = DeliveryLedger(target)
                for recipient, key in quiet:
                    ledger.skip(report_date, recipient.whatsapp, key, "nothing to report")
            for d in deliveries:
                error = f"error {d.error_code}: " if d.error_code else ""
                explanation = f" ({error}{d.explanation or ''})" if error or d.explanation else ""
                how = f" as {d.kind}" + (f" in {len(d.parts)} parts" if len(d.parts) > 1 else "") if d.kind else ""
                _log(
                    f"  {d.recipient} [{d.digest}]: {d.status}{how}"
                    + (f" {d.message_sid}" if d.message_sid else "")
                    + explanation
                )
            for recipient, key in quiet:
                _log(f"  {recipient.whatsapp} [{key}]: nothing to report, no message")
            status, outcome_text = whatsapp.outcome(deliveries) if deliveries else (0, "no message to send")
            note.append(outcome_text)

    if not dry_run:
        for line in missed_lines(target, report_date, recipients):
            _log(line)
    kinds = ", ".join(
        sorted(
            {
                f"standard summary ({w.checked.failure.code})" if w.checked.failure else f"picked by {ollama.model}"
                for w in written
            }
        )
    )
    _log(
        f"done in {time.perf_counter() - started:.2f}s: {len(written)} briefing(s) for {fmt_date(report_date)}, {kinds}, "
        f"{outcome_text}"
    )
    return status


def missed_lines(target: Target, report_date: dt.date, recipients: tuple[Recipient, ...]) -> list[str]:
    """The days before `report_date` whose briefing never reached someone: named, never resent unasked."""
    expected = {r.whatsapp for r in recipients} or None
    missed = DeliveryLedger(target).missed_days(report_date - dt.timedelta(days=1), expected=expected)
    lines = []
    for m in missed:
        why = "no run got as far as sending it" if m.status is None else f"its delivery is {m.status}"
        lines.append(
            f"missed: the briefing for {fmt_date(m.report_date)} never reached {m.recipient} [{m.digest}] "
            f"({why}); it is not resent unasked: python -m insights.deliver --date {m.report_date}"
        )
    return lines


def _print_dry_run(written: list[Written], quiet: list[tuple[Recipient, str]]) -> None:
    sender = os.environ.get("TWILIO_FROM_NUMBER", "").strip() or "(TWILIO_FROM_NUMBER not set)"
    print(f"DRY RUN: nothing was sent.\nFrom: {sender}")
    for w in written:
        to = ", ".join(_who(r) for r in w.digest.recipients) or "(no recipient configured)"
        parts = split_parts(w.checked.message.text)
        print(
            f"To: {to}\nDigest: {w.digest.key}\nLength: {whatsapp_length(w.checked.message.text)} characters"
            f" ({len(parts)} message{'s' if len(parts) > 1 else ''} inside the 24-hour window; the template outside it)"
        )
        print("-" * 40)
        print(w.checked.message.text)
        print("-" * 40)
    for recipient, key in quiet:
        print(f"To: {_who(recipient)}\nDigest: {key}\nNothing to report: no message.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m insights.deliver", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--date",
        type=dt.date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="the day to report on (default: yesterday in the org's time, the last complete day)",
    )
    parser.add_argument(
        "--target", choices=TARGETS, default="duckdb", help="the warehouse to read and write (default: duckdb)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="build and store the briefing, print what would be sent, send nothing"
    )
    parser.add_argument(
        "--force", action="store_true", help="send again even to recipients who already got this day's briefing"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="with --dry-run: print what would be sent as one JSON document on stdout (progress stays on stderr)",
    )
    args = parser.parse_args(argv)
    if args.json and not args.dry_run:
        parser.error("--json goes with --dry-run")
    from insights.ledger import DeliveryBusy, DeliveryLedger

    try:
        # One delivery at a time per DuckDB file: a second one stops here, before any work, with one clear line.
        with DeliveryLedger(args.target).claim_warehouse():
            from insights.replies import apply_journal

            applied = apply_journal(args.target)  # what Twilio told the API since the last run (DuckDB)
            if applied:
                _log(f"applied {applied} event(s) Twilio sent the API since the last run to the ledger")
            return run(args.date, args.target, dry_run=args.dry_run, force=args.force, as_json=args.json)
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
        print(
            f"hint: run it again (a briefing already sent is not sent twice); if it keeps failing, check {setting} "
            f"and {cause}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
