"""One daily job at a time per warehouse.

    python -m warehouse.job_lock --target duckdb|postgres -- COMMAND [ARG ...]

takes the job's lock, runs COMMAND as its child for as long as it runs, and
exits with the child's status. `scripts/daily.sh` runs its steps this way.

Two daily jobs at once (the schedule and a manual rerun, or two machines
sharing one database) break each other: they share dlt's working folder for
the warehouse (one deletes the load packages the other is loading), both load
the day's deal versions (dbt's `unique_in_new_loads` test then stops the
build), and on DuckDB the second one stops on the file lock of whichever step
the first is in. The deliveries claim what they send (insights/ledger.py), but
nothing before them does. So the second job stops at once, having done
nothing, with `error: another daily run is in progress ...` (exit 1).

The lock:

- an exclusive, non-blocking `flock` on a file of this machine:
  `<warehouse>.daily.lock` beside a DuckDB file; for PostgreSQL, a file in the
  temporary folder named after the server and database. The job's processes
  inherit it, so it stays held until the last step still running has ended,
  even if this process was killed alone;
- on PostgreSQL also a session-level advisory lock (`pg_try_advisory_lock`),
  on a connection this process keeps open for the whole job, so a job on
  another machine that shares the database is stopped too. It needs a
  connection that stays the same server session: a direct one or Supabase's
  session pooler, not the transaction pooler.

The kernel drops a `flock` when the last process holding it ends, and
PostgreSQL drops a session's advisory locks when its connection closes, so a
job that was killed (even with kill -9) never blocks the next one. If this
process alone dies, Linux sends the job's script SIGTERM (a parent-death
signal), so no further step starts without the lock; the step under way ends
on its own, still holding the inherited `flock`.

Exit status: the child's (128 + the signal if a signal ended it); 1 when
another daily job holds the lock; 3 when the warehouse could not be reached
or is not configured, so no lock could be taken and nothing was started
(`scripts/daily.sh` then runs the checks, which name what to fix).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from warehouse import TARGETS, ConfigError, Target, duckdb_path, error_reason, postgres_url

BUSY = 1
NOT_LOCKED = 3
# Set for the child to the holder's process id: `scripts/daily.sh` compares it with its parent's to know
# that it runs under the lock (and does not take it again).
HOLDER_ENV = "CRM_DAILY_LOCK_HOLDER"
APPLICATION_NAME = "crm-intelligence daily job"  # what the lock's session shows in pg_stat_activity
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"crm-intelligence:daily-job").digest()[:8], "big", signed=True)
CONNECT_TIMEOUT_SECONDS = 10
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class JobBusy(RuntimeError):
    """Another daily job holds the lock; the message says where it runs when that is known."""


class NotLocked(RuntimeError):
    """The lock could not be taken because the warehouse cannot be reached or is not configured."""


@contextmanager
def job_lock(target: Target) -> Iterator[int]:
    """Hold the daily job's lock for `target`; yields the lock file's descriptor, for the job's processes to inherit.

    Raises JobBusy when another job holds it, NotLocked when it cannot be taken at all.
    """
    with ExitStack() as stack:
        fd = stack.enter_context(_file_lock(lock_file(target)))
        if target == "postgres":
            stack.enter_context(_advisory_lock())
        yield fd


def lock_file(target: Target) -> Path:
    """The file this machine's jobs on `target` lock: beside the DuckDB file, or one per PostgreSQL database."""
    if target == "duckdb":
        path = duckdb_path()
        return path.with_name(path.name + ".daily.lock")
    try:
        parts = urlsplit(postgres_url())
    except ConfigError as exc:
        raise NotLocked(str(exc)) from None
    where = f"{parts.hostname}:{parts.port or 5432}{parts.path}"
    return (
        Path(tempfile.gettempdir()) / f"crm-intelligence-daily-{hashlib.sha256(where.encode()).hexdigest()[:12]}.lock"
    )


@contextmanager
def _file_lock(path: Path) -> Iterator[int]:
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:  # a file left by another user: a read-only descriptor can hold a flock too
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise NotLocked(f"cannot open {path.name}: {exc.strerror}") from None
    except OSError as exc:  # no such folder: the checks name the setting
        raise NotLocked(f"cannot create {path.name}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobBusy(_holder_in_file(fd)) from None
        _describe_holder(fd)
        yield fd
    finally:
        os.close(fd)


def _describe_holder(fd: int) -> None:
    """Write who holds the lock into the file, for the message a second job prints (nothing depends on it)."""
    note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}\n".encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, note, 0)
    except OSError:  # a read-only descriptor: the lock holds all the same
        pass


def _holder_in_file(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""


@contextmanager
def _advisory_lock() -> Iterator[None]:
    import psycopg2

    try:
        conn = psycopg2.connect(
            postgres_url(),
            application_name=f"{APPLICATION_NAME} (pid {os.getpid()} on {socket.gethostname()})",
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            # The session is idle for the whole job: keepalives let both ends notice a connection that died.
            keepalives=1,
            keepalives_idle=60,
            keepalives_interval=10,
            keepalives_count=6,
        )
    except ConfigError as exc:
        raise NotLocked(str(exc)) from None
    except psycopg2.Error as exc:
        raise NotLocked(f"cannot connect to PostgreSQL: {error_reason(exc)}") from None
    try:
        conn.autocommit = True  # a session lock, and no transaction left open for the job's length
        with conn.cursor() as cur:
            cur.execute("select pg_try_advisory_lock(%s)", [ADVISORY_KEY])
            if not cur.fetchone()[0]:
                raise JobBusy(_holder_in_database(cur))
        yield
    finally:
        conn.close()  # closing the session releases the lock


def _holder_in_database(cur: Any) -> str:
    """Where the job holding the lock runs, from its session's application_name (empty when that is not visible)."""
    import psycopg2

    try:
        cur.execute(
            "select application_name, to_char(backend_start, 'HH24:MI:SS TZ') from pg_stat_activity "
            "where datname = current_database() and application_name like %s and pid <> pg_backend_pid() "
            "order by backend_start limit 1",
            [APPLICATION_NAME + " (%"],
        )
        row = cur.fetchone()
    except psycopg2.Error:
        return ""
    return f"{row[0].removeprefix(APPLICATION_NAME + ' (').rstrip(')')} since {row[1]}" if row else ""


def run_locked(target: Target, command: list[str]) -> int:
    """Run `command` under the lock and return its exit status (see the module's docstring)."""
    try:
        with job_lock(target) as fd:
            return _run_child(command, fd)
    except JobBusy as exc:
        holder = f" ({exc})" if str(exc) else ""
        print(
            f"error: another daily run is in progress on {_where(target)}{holder}; this run did nothing: "
            "let that one finish",
            file=sys.stderr,
        )
        return BUSY
    except NotLocked as exc:
        print(f"note: the daily job's lock could not be taken ({exc})", file=sys.stderr)
        return NOT_LOCKED


def _where(target: Target) -> str:
    if target == "duckdb":
        return f"the DuckDB warehouse {duckdb_path().name}"
    return f"the PostgreSQL database {urlsplit(postgres_url()).path.lstrip('/') or 'postgres'}"


def _run_child(command: list[str], fd: int) -> int:
    """The child inherits the lock file's descriptor, so the flock lasts as long as the job's processes do."""
    holder = os.getpid()
    die_with_holder = _parent_death_signal(holder)
    child = subprocess.Popen(
        command, env={**os.environ, HOLDER_ENV: str(holder)}, pass_fds=(fd,), preexec_fn=die_with_holder
    )
    # Ctrl-C reaches every process of the terminal's group, the job's steps included: this process waits for them
    # to stop, then releases the lock.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = child.wait()
    return 128 - status if status < 0 else status


def _parent_death_signal(holder: int) -> Callable[[], None] | None:
    """A pre-exec function asking Linux to send the child SIGTERM when this process dies, however it dies.

    The script then starts no further step without the lock; the step it was in ends on its own, holding the
    inherited flock meanwhile. Elsewhere (no prctl) the steps only inherit the flock.
    """
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != holder:  # the holder died before the request was made
            os.kill(os.getpid(), signal.SIGTERM)

    return set_signal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m warehouse.job_lock", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", choices=TARGETS, required=True, help="the warehouse the job works on")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- and the command to run under the lock")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run: python -m warehouse.job_lock --target T -- COMMAND ...")
    return run_locked(args.target, command)


if __name__ == "__main__":
    sys.exit(main())
