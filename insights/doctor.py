"""Check every setting and connection of the daily job in seconds, before any of the work.

    python -m insights.doctor [--target duckdb|postgres] [--no-send] [--strict]

A mistake found by the daily job itself shows up a minute in, after the
extraction, dbt and the model; most of them are a variable away from being
caught at once. Each check makes the cheapest real call that proves the
setting works (a Zoho token refresh, unless the access token an earlier run got
is still good, and one read per scope the pipeline uses: Leads, Deals, users,
layouts, deal stages, currencies or else the org; the CRM user's time zone, a
write in a transaction that is rolled back, Twilio's account resource, Ollama's
model list) and prints one line: what was checked, the result, and the fix.
The recipients (`recipients.yml` and RECIPIENT_PHONE_NUMBER) are read and checked line by line, and each
owner's zoho_user is looked up among the users the last extraction loaded into the warehouse.

    ok    the setting works
    warn  the job runs, but not as you may expect (e.g. CRM_TIMEZONE differs from the org's,
          or the model is missing and the briefing will be the standard one)
    FAIL  the job would fail: fix this first

`--no-send` skips Twilio and the recipients (for `--dry-run` days). `--strict`
(what `make daily` uses) fails on a CRM_TIMEZONE that differs from the org's:
the daily numbers would be cut at the wrong hour. A missing model stays a
warning there too, since the standard briefing still carries the right numbers.
Exit status: 0 nothing failed (warnings allowed), 2 a check failed (configuration).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import requests

from warehouse import (
    MARTS_SCHEMA,
    PROJECT_ROOT,
    RAW_SCHEMA,
    TARGETS,
    ConfigError,
    Target,
    connect,
    duckdb_path,
    postgres_url,
)

Level = Literal["ok", "warn", "FAIL"]
HTTP_TIMEOUT_SECONDS = 10.0
# What the pipeline reads, one cheap request per Zoho scope it needs: (path, params, the scope Zoho documents).
# Stages and currencies need more than one request each; see `_zoho_probes`.
ZOHO_PROBES: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("Leads", {"fields": "id", "per_page": 1}, "ZohoCRM.modules.leads.READ"),
    ("Deals", {"fields": "id", "per_page": 1}, "ZohoCRM.modules.deals.READ"),
    ("users", {"type": "AllUsers", "per_page": 1}, "ZohoCRM.users.READ"),
    # The field list the extractor loads every field by, custom ones included.
    ("settings/fields", {"module": "Deals"}, "ZohoCRM.settings.fields.READ"),
)
LAYOUTS_SCOPE = "ZohoCRM.settings.layouts.READ"
PIPELINE_SCOPE = "ZohoCRM.settings.pipeline.READ"
CURRENCIES_SCOPE = "ZohoCRM.settings.currencies.READ"
ORG_SCOPE = "ZohoCRM.org.READ"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    result: str
    fix: str = ""
    strict: bool = False  # a warning that `--strict` turns into a failure


# --------------------------------------------------------------------------- the checks


def check_timezone_and_zoho() -> list[Check]:
    """The CRM_TIMEZONE name, then Zoho: the token refresh, one read per scope, and the org's time zone."""
    from zoneinfo import ZoneInfo

    from insights.facts import org_timezone

    checks: list[Check] = []
    try:
        configured = org_timezone().key
    except ConfigError as exc:
        checks.append(Check("CRM_TIMEZONE", "FAIL", str(exc), "use an IANA name such as Asia/Kolkata or Europe/Berlin"))
        configured = None

    from pipelines.zoho.helpers import TOKEN_THROTTLED

    try:
        client = _zoho_client()
        # The current user's time zone is the one Zoho writes datetimes in; users.READ is a scope the pipeline needs.
        me = ((client.get("users", params={"type": "CurrentUser"}) or {}).get("users") or [{}])[0]
    except ConfigError as exc:
        zoho = Check(
            "Zoho credentials",
            "FAIL",
            str(exc),
            "set the ZOHO_* variables, or dlt's SOURCES__ZOHO__* / [sources.zoho] in .dlt/secrets.toml (see README)",
        )
    except Exception as exc:  # ZohoError carries Zoho's reason and the hint; never a secret
        if getattr(exc, "code", None) == TOKEN_THROTTLED:
            # Zoho's limit of new access tokens per refresh token: it lifts by itself, and the refresh token is fine.
            fix = "wait 10 minutes, then run again (do not generate a new ZOHO_REFRESH_TOKEN: this one is fine)"
        else:
            fix = "generate a new ZOHO_REFRESH_TOKEN for this ZOHO_CLIENT_ID in the right ZOHO_DC"
        zoho = Check("Zoho token refresh", "FAIL", _one_line(exc), fix)
    else:
        zoho = None
    if zoho is not None:
        if configured is not None:
            checks.append(Check("CRM_TIMEZONE", "ok", f"{configured} (not compared: Zoho could not be asked)"))
        return [zoho, *checks]
    signed_in = f"signed in as {me.get('full_name') or me.get('email') or '?'}"
    if getattr(client, "token_from_cache", False):
        signed_in += " (with the access token an earlier run got; a new one is requested once it nears expiry)"
    checks.append(Check("Zoho token refresh", "ok", signed_in))

    refused = _zoho_probes(client)
    if refused:
        checks.append(
            Check(
                "Zoho scopes",
                "FAIL",
                "; ".join(refused),
                "generate the refresh token with the scopes listed in the README (Connect your Zoho org)",
            )
        )
    else:
        checks.append(
            Check("Zoho scopes", "ok", "Leads, Deals, users, fields, layouts, deal stages and currencies readable")
        )

    org_zone = me.get("time_zone")
    if configured is not None:
        if not org_zone:
            checks.append(Check("CRM_TIMEZONE", "warn", f"{configured}; Zoho did not say the CRM user's time zone"))
        elif _same_zone(configured, org_zone, ZoneInfo):
            checks.append(Check("CRM_TIMEZONE", "ok", f"{configured}, as the org"))
        else:
            checks.append(
                Check(
                    "CRM_TIMEZONE",
                    "warn",
                    f"{configured}, but the org is on {org_zone}: days would be cut at the wrong hour",
                    f"set CRM_TIMEZONE={org_zone}",
                    strict=True,
                )
            )
    return checks


def check_warehouse(target: Target) -> list[Check]:
    """Reachable and writable: a schema and a table created in a transaction that is rolled back."""
    name = f"warehouse ({target})"
    try:
        if target == "duckdb":
            path = duckdb_path()
            if not path.parent.is_dir():
                return [
                    Check(
                        name,
                        "FAIL",
                        f"the folder of DUCKDB_PATH does not exist ({path.parent.name}/)",
                        "create the folder or fix DUCKDB_PATH",
                    )
                ]
            if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
                return [
                    Check(name, "FAIL", f"{path.name} is not writable", "fix the file's permissions or DUCKDB_PATH")
                ]
            if not path.exists():  # checking must not leave an empty warehouse behind
                return [Check(name, "ok", f"{path.name} does not exist yet; the first extraction creates it")]
        else:
            postgres_url()
        with connect(target) as conn:
            cur = conn if target == "duckdb" else conn.cursor()  # a DuckDB cursor is a connection of its own
            if target == "duckdb":
                cur.execute("begin transaction")
            cur.execute(f"create schema if not exists {MARTS_SCHEMA}")
            cur.execute(f"create table {MARTS_SCHEMA}._doctor_probe (checked integer)")
            cur.execute(f"insert into {MARTS_SCHEMA}._doctor_probe values (1)")
            conn.rollback()
    except ConfigError as exc:
        return [Check(name, "FAIL", str(exc), "set DUCKDB_PATH or DATABASE_URL")]
    except Exception as exc:
        reason = _one_line(exc)
        fix = (
            "another process is writing the file (a running job?); wait for it"
            if "lock" in reason.lower()
            else "check DATABASE_URL (host, port, password, ?sslmode=require for Supabase)"
            if target == "postgres"
            else "check DUCKDB_PATH"
        )
        return [Check(name, "FAIL", reason, fix)]
    where = duckdb_path().name if target == "duckdb" else "PostgreSQL"
    return [Check(name, "ok", f"{where} reachable and writable")]


def check_ollama() -> list[Check]:
    """The model server and the model. A warning at worst: without them the standard briefing still goes out."""
    from insights.settings import OllamaSettings

    try:
        ollama = OllamaSettings.from_env()
    except ConfigError as exc:  # OLLAMA_NUM_CTX / OLLAMA_TIMEOUT: deliver would stop on it, so it is an error here
        return [Check("Ollama", "FAIL", str(exc), "set it to a positive number of tokens / seconds, or unset it")]
    fix = f"start Ollama and run `ollama pull {ollama.model}`, or set OLLAMA_BASE_URL / OLLAMA_MODEL"
    if ollama.url_problem:
        return [Check("Ollama", "warn", ollama.url_problem + "; the standard briefing will be sent", fix)]
    base = ollama.base_url if "://" in ollama.base_url else f"http://{ollama.base_url}"
    try:
        response = requests.get(base.rstrip("/") + "/api/tags", timeout=HTTP_TIMEOUT_SECONDS)
        response.raise_for_status()
        models = {m.get("name") for m in response.json().get("models", [])} | {
            m.get("model") for m in response.json().get("models", [])
        }
    except (requests.RequestException, ValueError) as exc:
        return [
            Check("Ollama", "warn", f"not reachable ({type(exc).__name__}); the standard briefing will be sent", fix)
        ]
    wanted = {ollama.model, f"{ollama.model}:latest"}
    if not models & wanted:
        return [Check("Ollama", "warn", f"{ollama.model} is not pulled; the standard briefing will be sent", fix)]
    return [Check("Ollama", "ok", f"{ollama.model} ready")]


def check_twilio(target: Target) -> list[Check]:
    """The recipients (and their Zoho users, when the warehouse has them), the sender in E.164, then the
    credentials with one authenticated read."""
    from insights.recipients import E164
    from insights.settings import TwilioSettings
    from insights.whatsapp import check_credentials, twilio_client, whatsapp_address

    checks = check_recipients(target)
    try:
        settings = TwilioSettings.from_env(recipients=())  # the recipients were checked just above
    except ConfigError as exc:
        return [*checks, Check("Twilio settings", "FAIL", str(exc), "set it (see README, Setting up WhatsApp)")]
    sender = whatsapp_address(settings.from_number).removeprefix("whatsapp:")
    if not E164.match(sender):
        checks.append(
            Check(
                "TWILIO_FROM_NUMBER",
                "FAIL",
                f"not a phone number in E.164: {settings.from_number}",
                "use the WhatsApp sender of the account, e.g. +14155238886 (the sandbox)",
            )
        )
    else:
        checks.append(Check("TWILIO_FROM_NUMBER", "ok", sender))
    try:
        check_credentials(twilio_client(settings, HTTP_TIMEOUT_SECONDS), settings, strict=True)
    except ConfigError as exc:
        checks.append(
            Check("Twilio credentials", "FAIL", str(exc), "copy the Account SID and Auth Token from the console")
        )
    except Exception as exc:
        checks.append(
            Check(
                "Twilio credentials",
                "FAIL",
                f"Twilio could not be asked ({_one_line(exc)})",
                "check the network (or TWILIO_API_BASE, if set)",
            )
        )
    else:
        checks.append(Check("Twilio credentials", "ok", "accepted by Twilio"))
        checks.append(_check_template(settings))
    checks.extend(_check_missed_days(target))
    return checks


def _check_template(settings: Any) -> Check:
    """The template that reaches people outside WhatsApp's 24-hour window, and its approval at WhatsApp."""
    from insights.whatsapp import template_status, twilio_client

    name = "WhatsApp template"
    create = "run `python -m insights.whatsapp create-template` and set the TWILIO_TEMPLATE_SID it prints"
    if not settings.template_sid:
        return Check(
            name,
            "warn",
            "TWILIO_TEMPLATE_SID is not set: only people who wrote to the sender in the last "
            "24 hours can get the briefing (WhatsApp refuses free-form text to anyone else, error 63016)",
            create,
        )
    try:
        status, reason = template_status(twilio_client(settings, HTTP_TIMEOUT_SECONDS), settings.template_sid)
    except Exception as exc:
        return Check(
            name,
            "FAIL",
            f"{settings.template_sid} could not be read ({_one_line(exc)})",
            f"check TWILIO_TEMPLATE_SID, or {create}",
        )
    if status == "approved":
        return Check(name, "ok", f"{settings.template_sid} approved by WhatsApp")
    if status == "rejected":
        return Check(
            name, "FAIL", f"{settings.template_sid} rejected by WhatsApp ({reason or 'no reason given'})", create
        )
    return Check(
        name,
        "warn",
        f"{settings.template_sid} is {status} at WhatsApp: until it is approved, only people "
        "who wrote in the last 24 hours get the briefing",
        "wait for WhatsApp's review (minutes to a day)",
    )


def _check_missed_days(target: Target) -> list[Check]:
    """Report days whose briefing never reached someone (a failed run, a crash before delivery)."""
    from insights.facts import org_timezone
    from insights.ledger import DeliveryLedger

    if target == "duckdb" and not duckdb_path().exists():
        return []
    try:
        yesterday = dt.datetime.now(org_timezone()).date() - dt.timedelta(days=1)
        missed = DeliveryLedger(target).missed_days(yesterday)
    except Exception:  # no ledger yet, or the warehouse check already says why it cannot be read
        return []
    if not missed:
        return [Check("missed briefings", "ok", "none in the last 14 days")]
    days = sorted({m.report_date for m in missed})
    return [
        Check(
            "missed briefings",
            "warn",
            f"{len(missed)} briefing(s) never went out, for {', '.join(d.isoformat() for d in days)}",
            f"send one on purpose with python -m insights.deliver --date {days[-1].isoformat()} "
            "(old news is not resent unasked)",
        )
    ]


def check_recipients(target: Target) -> list[Check]:
    """Who gets what: the recipients file and RECIPIENT_PHONE_NUMBER, then the owners' Zoho users against the
    users loaded into the warehouse.

    The line's result says where they were listed.
    """
    from insights.recipients import NUMBERS_VARIABLE, RecipientsError, load_recipients, recipients_file
    from insights.settings import NO_RECIPIENTS

    fix = (
        "see recipients.example.yml: each person has whatsapp (+ country code and number, e.g. +14155550123) "
        "and role manager or owner; an owner has zoho_user"
    )
    try:
        path, label = recipients_file()
        sources = ([label] if path is not None else []) + (
            [NUMBERS_VARIABLE] if os.environ.get(NUMBERS_VARIABLE, "").strip() else []
        )
    except RecipientsError:  # RECIPIENTS_FILE names a file that is not there: load_recipients says so
        sources = ["RECIPIENTS_FILE"]
    name = "recipients"
    try:
        recipients = load_recipients()
    except RecipientsError as exc:
        return [Check(name, "FAIL", str(exc), fix)]
    if not recipients:
        return [Check(name, "FAIL", NO_RECIPIENTS, "copy recipients.example.yml to recipients.yml and fill it in")]
    managers = sum(r.role == "manager" for r in recipients)
    owners = len(recipients) - managers
    checks = [
        Check(
            name,
            "ok",
            f"{_count(len(recipients), 'recipient')}: {_count(managers, 'manager')}, "
            f"{_count(owners, 'owner')} ({', '.join(sources)})",
        )
    ]
    if owners:
        checks.append(_check_owners(recipients, target))
    return checks


def _check_owners(recipients: tuple[Any, ...], target: Target) -> Check:
    """Each owner's zoho_user against the users the last extraction loaded; not checked before the first one."""
    from insights.recipients import UsersNotLoaded, resolve_owners, users_in_warehouse
    from warehouse import DEMO_DUCKDB_FILE, PROJECT_ROOT  # the demo's warehouse holds the sandbox org's users

    name = "owners' Zoho users"
    not_checked = f"not checked: load the CRM first (the users are read from {RAW_SCHEMA}.users)"
    try:
        if target == "duckdb" and not duckdb_path().exists():  # checking must not leave an empty warehouse behind
            return Check(name, "warn", not_checked, "run the daily job (or python -m pipelines.zoho) once")
        if target == "duckdb" and duckdb_path() == PROJECT_ROOT / DEMO_DUCKDB_FILE:  # `make check` after the demo
            return Check(
                name,
                "warn",
                f"not checked: {DEMO_DUCKDB_FILE} is the demo's warehouse",
                "run the daily job (or python -m pipelines.zoho) once",
            )
        # Not read-only: the warehouse check holds a read-write connection to the same file meanwhile, and
        # DuckDB refuses a second connection of another kind in one process. Nothing is written.
        with connect(target) as conn:
            users = users_in_warehouse(conn)
    except UsersNotLoaded:
        return Check(name, "warn", not_checked, "run the daily job (or python -m pipelines.zoho) once")
    except Exception as exc:  # the warehouse check says why the warehouse cannot be reached
        return Check(
            name, "warn", f"not checked: the warehouse could not be read ({_one_line(exc)})", "see the warehouse line"
        )
    owners, problems = resolve_owners(recipients, users)
    failures = [p for p in problems if not getattr(p, "warning", False)]
    if failures:
        return Check(
            name,
            "FAIL",
            "; ".join(problems),
            "set zoho_user to the id or email of a user of the org (Setup > Users in Zoho CRM)",
        )
    if problems:
        return Check(name, "warn", "; ".join(problems), "remove the entry, or give it to the user's successor")
    return Check(name, "ok", f"{_count(len(owners), 'owner')} found among the org's {_count(len(users), 'user')}")


def _zoho_probes(client: Any) -> list[str]:
    """One read per scope the extractor uses, side by side; what Zoho refused, with the scope it needs.

    Deal stages are read per layout (`settings/pipeline?layout_id=`), so that probe takes the first layout
    from `settings/layouts`. An org with one currency answers `org/currencies` with CURRENCIES_NOT_ENABLED,
    which Zoho sends only after the scope check passed; the extractor then reads `org`, so that is probed too.
    """
    from pipelines.zoho.settings import CURRENCIES_NOT_ENABLED

    refused: list[str] = []

    def read(path: str, scope: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        try:
            return client.get(path, params=params) or {}
        except Exception as exc:  # ZohoError carries Zoho's code and message; never a secret
            if getattr(exc, "code", None) == CURRENCIES_NOT_ENABLED and path == "org/currencies":
                read("org", ORG_SCOPE)  # one currency: the scope is granted; the extractor reads `org` instead
            else:
                refused.append(f"{path} ({scope}): {_one_line(exc)}")
            return None

    def stages() -> None:
        layouts = read("settings/layouts", LAYOUTS_SCOPE, {"module": "Deals"})
        first = ((layouts or {}).get("layouts") or [{}])[0].get("id")
        if first:
            read("settings/pipeline", PIPELINE_SCOPE, {"layout_id": first})

    probes: list[Callable[[], Any]] = [partial(read, path, scope, params) for path, params, scope in ZOHO_PROBES]
    probes += [stages, partial(read, "org/currencies", CURRENCIES_SCOPE)]
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        for future in [pool.submit(probe) for probe in probes]:
            future.result()
    return sorted(refused)  # the same order whatever answered first


# --------------------------------------------------------------------------- running them


def run_checks(target: Target, *, send: bool, strict: bool = False) -> list[Check]:
    """Every check, the slow network ones side by side; the order of the table does not depend on timing."""
    groups: list[Callable[[], list[Check]]] = [check_timezone_and_zoho, lambda: check_warehouse(target), check_ollama]
    if send:
        groups.append(lambda: check_twilio(target))
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        futures = [pool.submit(group) for group in groups]
        checks = [check for future in futures for check in future.result()]
    if strict:
        checks = [replace(c, level="FAIL") if c.strict and c.level == "warn" else c for c in checks]
    return checks


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.level:<4}  {c.name:<{width}}  {c.result}")
        if c.fix and c.level != "ok":
            lines.append(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m insights.doctor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", choices=TARGETS, default="duckdb", help="the warehouse to check (default: duckdb)")
    parser.add_argument("--no-send", action="store_true", help="skip Twilio and the recipients (dry runs)")
    parser.add_argument("--strict", action="store_true", help="fail on a time zone that differs from the org's")
    args = parser.parse_args(argv)
    # dlt reads `.dlt/secrets.toml` and `.dlt/config.toml` under the working directory: pin it to the project,
    # as the extraction does, so both read the same files wherever the command is run from.
    os.environ.setdefault("DLT_PROJECT_DIR", str(PROJECT_ROOT))
    started = time.perf_counter()
    checks = run_checks(args.target, send=not args.no_send, strict=args.strict)
    print(render(checks))
    failed = [c for c in checks if c.level == "FAIL"]
    warned = sum(c.level == "warn" for c in checks)
    print(
        f"{len(checks)} checks in {time.perf_counter() - started:.1f}s: "
        + (f"{len(failed)} failed, " if failed else "all passed, ")
        + f"{warned} warning(s)"
    )
    if failed:
        print(
            f"error: {failed[0].name}: {failed[0].result}" + (f" -> {failed[0].fix}" if failed[0].fix else ""),
            file=sys.stderr,
        )
        return 2
    return 0


# --------------------------------------------------------------------------- helpers


def _zoho_client() -> object:
    """A Zoho client resolved exactly as the extraction resolves its own, failing fast (one attempt per request).

    It takes the access token an earlier run left in the shared cache, and leaves its own there: the
    extraction that follows the check in `make daily` then needs no token request of its own.
    """
    from pipelines.zoho.credentials import connect as connect_zoho
    from pipelines.zoho.credentials import resolve_settings

    return connect_zoho(resolve_settings(), retry_attempts=1)


def _same_zone(configured: str, org_zone: str, zone_info: type) -> bool:
    """Zoho names zones like IANA (Asia/Kolkata) but may use an alias (Asia/Calcutta): compare today's offsets too."""
    if configured == org_zone:
        return True
    moment = dt.datetime.now(dt.UTC)
    try:
        return (
            moment.astimezone(zone_info(configured)).utcoffset() == moment.astimezone(zone_info(org_zone)).utcoffset()
        )
    except (KeyError, ValueError):  # Zoho sent a name the zone database does not know
        return False


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


if __name__ == "__main__":
    sys.exit(main())
