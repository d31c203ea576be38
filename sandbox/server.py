"""`SandboxServer`: the sandbox org over HTTP (standard library only), plus knobs for tests.

Accounts and API share one server: `/oauth/v2/token` mints tokens whose `api_domain` is the address
the client used, `/crm/v8/...` is the API. Two control routes live outside Zoho's namespace:
`POST /_sandbox/advance` ({"days": n}) plays simulated days, `GET /_sandbox/stats` counts requests per
endpoint ("GET /crm/v8/Leads", "POST /oauth/v2/token", ...).

Test knobs: `page_token_limit` (how many records one page_token chain reaches: 100,000 as on Zoho, small
values let tests cross the ceiling cheaply), `expire_tokens()` / `expire_tokens_after(n)` (tokens die
mid-run, as they do on Zoho after an hour or when a 16th token is minted),
`inject_faults(count, status, path_prefix)` (the next matching requests fail with Zoho's error envelope),
`faults` (a seeded `FaultPlan` of random faults, see `faults.py`; also `POST /_sandbox/faults`) and
`credits` (Zoho's daily API credits; also `POST /_sandbox/credits`). `GET /_sandbox/faults` reports
what was injected.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit

from .api import Request, Response, Route, ZohoApi
from .auth import TokenAuthority
from .faults import CREDITS_HEADER, RETRY_AFTER_SECONDS, Credits, FaultPlan, html_page
from .model import resolve_module
from .org import SandboxOrg
from .paging import PAGE_TOKEN_TTL, TOKEN_LIMIT, PageTokens
from .zoho_format import CONTENT_TYPE, ZohoError, encode_json

SECRET_PARAMS = frozenset({"client_secret", "refresh_token", "code", "token", "access_token", "client_id"})


@dataclass
class _Fault:
    remaining: int
    status: int
    path_prefix: str


class SandboxServer:
    """Serves a `SandboxOrg` on `host:port` in a background thread (`port=0` picks a free port).

    Use it as a context manager, or `start()` / `stop()`.
    """

    def __init__(
        self,
        org: SandboxOrg,
        host: str = "127.0.0.1",
        port: int = 0,
        token_ttl: int = 3600,
        *,
        mint_limit: int | None = None,
        page_token_ttl: int = PAGE_TOKEN_TTL,
        page_token_limit: int = TOKEN_LIMIT,
        log: TextIO | None = None,
        faults: FaultPlan | None = None,
        credits: int | None = None,
    ) -> None:
        self.org = org
        self.host = host
        self.port = port
        self.auth = TokenAuthority(user_id=org.current_user_id, ttl=token_ttl, mint_limit=mint_limit)
        self.api = ZohoApi(org, self.auth, PageTokens(ttl=page_token_ttl, limit=page_token_limit))
        self.routes: list[Route] = self.api.routes() + [
            Route.of("/_sandbox/advance", {"POST": self._advance}, authenticated=False, counted=False),
            Route.of(
                "/_sandbox/stats", {"GET": lambda req: Response(200, self.stats())}, authenticated=False, counted=False
            ),
            Route.of(
                "/_sandbox/faults",
                {"GET": lambda req: Response(200, self.faults.report()), "POST": self._set_faults},
                authenticated=False,
                counted=False,
            ),
            Route.of(
                "/_sandbox/credits",
                {"GET": lambda req: Response(200, self.credits.report()), "POST": self._set_credits},
                authenticated=False,
                counted=False,
            ),
        ]
        self.faults = faults or FaultPlan()
        self.credits = Credits(credits)
        self.log = log
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        self._faults: list[_Fault] = []
        self._expire_countdown: int | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.sandbox = self
        self._httpd, self.port = httpd, httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="zoho-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def env(self) -> dict[str, str]:
        """What a client needs: accounts URL, the sandbox credentials and the org timezone."""
        return {"ZOHO_ACCOUNTS_URL": self.url, **self.auth.credentials(), "CRM_TIMEZONE": self.org.timezone}

    # -- knobs ------------------------------------------------------------------------------

    @property
    def token_ttl(self) -> int:
        """Lifetime (seconds) of access tokens minted from now on; `expires_in` of the token response."""
        return self.auth.ttl

    @token_ttl.setter
    def token_ttl(self, seconds: int) -> None:
        self.auth.ttl = seconds

    @property
    def page_token_limit(self) -> int:
        """Records one page_token chain reaches before PAGINATION_LIMIT_EXCEEDED (Zoho: 100,000)."""
        return self.api.page_tokens.limit

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()

    def expire_tokens(self) -> None:
        self.auth.expire_all()

    def expire_tokens_after(self, requests: int) -> None:
        """Expire every token issued so far once `requests` more /crm requests have been served."""
        if requests <= 0:
            self.expire_tokens()
            return
        with self._lock:
            self._expire_countdown = requests

    def inject_faults(self, count: int, status: int = 500, path_prefix: str = "/crm/") -> None:
        """The next `count` requests whose path starts with `path_prefix` fail with `status`
        (Zoho's INTERNAL_ERROR envelope; TOO_MANY_REQUESTS for 429)."""
        with self._lock:
            self._faults.append(_Fault(count, status, path_prefix))

    # -- request handling -------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Route one request; every failure becomes a Zoho error envelope."""
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        route, match = self._route(path)
        if route is None:
            self._count(f"{method} {path}")
            return _error(ZohoError("INVALID_URL_PATTERN"))
        raw_module = match.get("module")
        module = None if raw_module is None else resolve_module(raw_module)
        if route.counted:
            self._count(f"{method} {route.stats_path(module.api_name if module else raw_module)}")
        host = headers.get("Host")
        request = Request(
            method=method,
            path=path,
            params=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=headers,
            body=body,
            base_url=f"http://{host}" if host else self.url,
            path_params=match,
            module=module.api_name if module else "",
        )
        fault = self.faults.draw(path, "page_token" in request.params) if route.authenticated else None
        credit_headers: dict[str, str] = {}
        try:
            self._take_fault(path)
            early = self._early_fault(fault, request)
            if early is not None:
                return early
            handler = route.handlers.get(method)
            if handler is None:
                raise ZohoError("INVALID_REQUEST_METHOD")
            if not route.authenticated:
                return handler(request)
            request.user_id = self.auth.authenticate(headers.get("Authorization"))
            allowed, credit_headers = self.credits.spend()
            if not allowed:
                raise ZohoError("TOO_MANY_REQUESTS")
            try:
                if raw_module is not None and module is None:
                    raise ZohoError("INVALID_MODULE", {"resource_path_index": 0})
                response = handler(request)
            finally:
                self._served_api_request()
            response.headers.update(credit_headers)
            return _garble(response, fault) if fault in ("truncated", "html") else response
        except ZohoError as error:
            response = _error(error)
            response.headers.update(credit_headers)
            return response
        except Exception:  # a sandbox bug must not look like a hung server
            self._write_log(traceback.format_exc())
            return _error(ZohoError("INTERNAL_ERROR"))

    def _route(self, path: str) -> tuple[Route | None, dict[str, str]]:
        for route in self.routes:
            match = route.pattern.match(path)
            if match:
                return route, match.groupdict()
        return None, {}

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def _take_fault(self, path: str) -> None:
        with self._lock:
            fault = next((f for f in self._faults if path.startswith(f.path_prefix)), None)
            if fault is None:
                return
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
        raise ZohoError("TOO_MANY_REQUESTS" if fault.status == 429 else "INTERNAL_ERROR", status=fault.status)

    def _early_fault(self, fault: str | None, request: Request) -> Response | None:
        """Act out a drawn fault that happens before the API answers (None: answer normally)."""
        if fault is None or fault in ("truncated", "html"):
            return None
        if fault == "drop":
            return Response(0, drop=True)
        if fault == "slow":
            time.sleep(self.faults.slow_seconds)
        elif fault == "invalid_token":
            self.expire_tokens()
        elif fault == "mutate":
            self._mutate(request.module or "Leads")
        elif fault == "page_token_expiry":
            raise ZohoError("EXPIRED_VALUE", {"param_name": "page_token"})
        elif fault == "429":
            response = _error(ZohoError("TOO_MANY_REQUESTS"))
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            remaining = self.credits.report()["remaining"]
            if remaining is not None:
                response.headers[CREDITS_HEADER] = str(remaining)
            return response
        elif fault == "500":
            raise ZohoError("INTERNAL_ERROR")
        elif fault in ("502", "503"):
            status = int(fault)
            reason = "Bad Gateway" if status == 502 else "Service Unavailable"
            return Response(status, raw=html_page(status, reason), content_type="text/html")
        return None

    def _mutate(self, module: str) -> None:
        """A user edits one record and deletes another while a client pages."""
        org = self.org
        with org.lock:
            ids = [key[0] for key in org.select(module, "id").keys]
            edited, deleted = self.faults.pick(ids), self.faults.pick(ids)
            if edited is not None:
                org.update(
                    module, [{"id": edited, "Description": "Edited while a client was paging"}], org.current_user_id
                )
            if deleted is not None and deleted != edited:
                org.delete(module, [deleted], org.current_user_id)

    def _set_faults(self, req: Request) -> Response:
        try:
            self.faults = FaultPlan.from_json(req.json_body())
        except (TypeError, ValueError) as error:
            raise ZohoError("INVALID_DATA", {"expected_data_type": "jsonobject"}, message=str(error)) from None
        return Response(200, self.faults.report())

    def _set_credits(self, req: Request) -> Response:
        body = req.json_body()
        values = [body.get(k) if isinstance(body, dict) else "" for k in ("allowance", "remaining")]
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) for v in values):
            raise ZohoError("INVALID_DATA", {"expected_data_type": "integer"})
        self.credits.set(*values)
        return Response(200, self.credits.report())

    def _served_api_request(self) -> None:
        with self._lock:
            if self._expire_countdown is None:
                return
            self._expire_countdown -= 1
            if self._expire_countdown > 0:
                return
            self._expire_countdown = None
        self.expire_tokens()

    def _advance(self, req: Request) -> Response:
        body = req.json_body() or {}
        days = body.get("days", 1) if isinstance(body, dict) else None
        if not isinstance(days, int) or isinstance(days, bool) or days < 0:
            raise ZohoError("INVALID_DATA", {"param_name": "days", "expected_data_type": "integer"})
        return Response(200, self.org.advance(days))

    def _write_log(self, line: str) -> None:
        if self.log is not None:
            print(line, file=self.log, flush=True)

    def log_request(self, client: str, method: str, target: str, status: int, started: float) -> None:
        if self.log is not None:
            millis = (time.perf_counter() - started) * 1000
            self._write_log(f"{client} {method} {redact(target)} -> {status} ({millis:.1f} ms)")


def _error(error: ZohoError) -> Response:
    return Response(error.status, error.payload)


def _garble(response: Response, fault: str) -> Response:
    """A 200 whose body cannot be read: the JSON cut in half, or an HTML page."""
    if response.status != 200 or response.payload is None:
        return response
    if fault == "html":
        return Response(
            200,
            raw=html_page(200, "Temporarily unavailable"),
            content_type="text/html;charset=UTF-8",
            headers=response.headers,
        )
    body = encode_json(response.payload)
    return Response(200, raw=body[: len(body) // 2], content_type=CONTENT_TYPE, headers=response.headers)


def redact(target: str) -> str:
    """The request target for logs: secrets replaced, page tokens shortened."""
    split = urlsplit(target)
    if not split.query:
        return split.path
    params = [
        (k, "***" if k in SECRET_PARAMS else v[:8] + "..." if k == "page_token" else v)
        for k, v in parse_qsl(split.query, keep_blank_values=True)
    ]
    return f"{split.path}?{urlencode(params, safe=',*.')}"


class _HTTPServer(ThreadingHTTPServer):
    """Tracks open connections so that `stop()` also ends idle keep-alive connections: a client must
    not keep talking to a stopped sandbox through its connection pool."""

    daemon_threads = True
    sandbox: SandboxServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer (killed, timed out) is not a sandbox error."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client paging 350 pages reuses one connection
    server_version = "ZohoCRMSandbox/1.0"
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections are closed eventually

    def _dispatch(self) -> None:
        started = time.perf_counter()
        sandbox = self.server.sandbox  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        response = sandbox.handle(self.command, self.path, self.headers, body)  # type: ignore[arg-type]
        if response.drop:
            self.close_connection = True
            sandbox.log_request(self.client_address[0], self.command, self.path, 0, started)
            return
        self._send(response)
        sandbox.log_request(self.client_address[0], self.command, self.path, response.status, started)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.payload is None and response.raw is None:
            self.end_headers()
            return
        body = response.raw if response.raw is not None else encode_json(response.payload)
        self.send_header("Content-Type", response.content_type or CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Silenced: `SandboxServer.log_request` writes one concise, secret-free line per request."""
