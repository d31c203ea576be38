"""Load Zoho CRM into the warehouse's `zoho_raw` schema (leads, deals, users, deal_stages, currencies, deleted_records).

The first run reads everything; later runs read only what changed since the
last one (minus a 10-minute overlap) and remove records deleted in Zoho. A run
that was interrupted is completed by the next one.

Zoho credentials: ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN
(or SOURCES__ZOHO__* / [sources.zoho] in .dlt/secrets.toml); ZOHO_DC picks the
data centre (com, eu, in, com.au, jp, ca, com.cn, sa; default com) and
ZOHO_ACCOUNTS_URL overrides the accounts server (e.g. the local sandbox).
Warehouse: DUCKDB_PATH (default warehouse.duckdb) or DATABASE_URL for postgres.

Progress goes to stderr; the last line on stdout sums the run up, e.g.
  loaded leads=5000 deals=2000 users=8 deal_stages=9 currencies=5 deleted_records=40 | api_calls=48 | 12.3s
ZOHO_CREDIT_FLOOR stops a run cleanly when Zoho reports fewer API credits
left than that; what was read is loaded and the next run continues.

Exit status: 0 success, 1 the run failed, 2 a setting is missing or wrong,
75 try later (API credits below ZOHO_CREDIT_FLOOR, or Zoho's limits on calls or
token requests reached); what the run loaded is kept either way.
"""

from __future__ import annotations

import os
import sys

from warehouse import PROJECT_ROOT

# dlt looks for `.dlt/config.toml` and `.dlt/secrets.toml` under the working
# directory; pin it to the project so the command works from anywhere.
os.environ.setdefault("DLT_PROJECT_DIR", str(PROJECT_ROOT))

import argparse  # noqa: E402
import logging  # noqa: E402

from warehouse import TARGETS, ConfigError  # noqa: E402

from .helpers import ZohoError  # noqa: E402

EXIT_TRY_LATER = 75  # sysexits' EX_TEMPFAIL: schedulers read it as "run again later"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.zoho",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--destination", choices=TARGETS, default="duckdb", help="warehouse to load (default: duckdb)")
    parser.add_argument(
        "--full-refresh",
        action="store_true",
        help="empty the raw tables and forget the cursors first, then read everything again (the history tables,"
        " lead_versions, deal_versions and deal_stage_history, are kept: Zoho cannot give them again)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="show every page and token refresh (-vv: and dlt's own log)"
    )
    args = parser.parse_args(argv)

    if args.verbose >= 2:
        os.environ.setdefault("RUNTIME__LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    from .run import Progress, load

    try:
        summary = load(args.destination, full_refresh=args.full_refresh, progress=Progress(verbose=bool(args.verbose)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the next run completes what this one started", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; the traceback only with -v
        if args.verbose:
            logging.exception("the run failed")
        root = _root(exc)
        if isinstance(root, ZohoError) and root.retry_later:
            print(f"stopped: {_reason(exc)}", file=sys.stderr)
            return EXIT_TRY_LATER
        print(f"error: {_reason(exc)}", file=sys.stderr)
        return 2 if _is_configuration(root) else 1
    print(summary.line())
    return 0


def _root(exc: BaseException) -> BaseException:
    """The innermost cause, or the first of ours on the way (dlt wraps each step's failure)."""
    while not isinstance(exc, (ZohoError, ConfigError)):
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def _is_configuration(root: BaseException) -> bool:
    """A missing setting, or credentials Zoho refuses (a wrong or revoked refresh token, client or data centre)."""
    return isinstance(root, ConfigError) or (
        isinstance(root, ZohoError) and str(root).startswith("token request failed: invalid_")
    )


def _reason(exc: BaseException) -> str:
    root = _root(exc)
    text = str(root).strip().splitlines()
    message = text[0] if text else type(root).__name__
    return message if isinstance(root, (ZohoError, ConfigError)) else f"{type(root).__name__}: {message}"


if __name__ == "__main__":
    raise SystemExit(main())
