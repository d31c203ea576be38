"""Start a throwaway PostgreSQL server from the stock binaries (tests and benchmarks).

Postgres refuses to run as root, and pytest's temporary folders are private to
the user running the tests, so as root the server runs as the `postgres` system
user in a folder handed to it. It listens on a free loopback port, with fsync
off: the data is disposable.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class PostgresUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise PostgresUnavailable(
            f"PostgreSQL's {name} is not installed (apt-get install postgresql) and TEST_DATABASE_URL is not set"
        )
    return found


@dataclass
class LocalServer:
    """A throwaway server's folder and port: it can be stopped and started again, as a host restarts one."""

    base: str
    port: int
    run_as: list[str]

    @property
    def data(self) -> str:
        return os.path.join(self.base, "data")

    @property
    def url(self) -> str:
        return f"postgresql://postgres:unused@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off -c full_page_writes=off"
        subprocess.run(
            [
                *self.run_as,
                _binary("pg_ctl"),
                "-D",
                self.data,
                "-w",
                "-l",
                os.path.join(self.base, "log"),
                "-o",
                options,
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` as a restart does (sessions closed cleanly), `immediate` as a crash."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run(
                [*self.run_as, _binary("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop"], capture_output=True
            )


@contextmanager
def throwaway_postgres() -> Iterator[LocalServer]:
    """A fresh server from the stock binaries, running; stopped and its data deleted on exit."""
    as_root = os.geteuid() == 0
    base = tempfile.mkdtemp(prefix="crm-intel-pg-")
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    server = LocalServer(base=base, port=_free_port(), run_as=["runuser", "-u", "postgres", "--"] if as_root else [])
    try:
        subprocess.run(
            [*server.run_as, _binary("initdb"), "-D", server.data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def local_postgres() -> Iterator[str]:
    """Yield the admin URL of a fresh server; stop it and delete its data on exit.

    `TEST_DATABASE_URL` skips all this and points at an existing server instead.
    """
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    with throwaway_postgres() as server:
        yield server.url


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Create database `name` (optionally cloned from `template`) and return its URL."""
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'create database "{name}"' + (f' template "{template}"' if template else ""))
    finally:
        conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
    finally:
        conn.close()
