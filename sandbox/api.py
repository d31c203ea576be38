"""The Zoho routes the sandbox serves: `/oauth/v2/token` and the `/crm/v8/...` API.

Each handler takes a parsed `Request` and returns a `Response` (JSON payload or an empty 204/304);
errors are raised as `ZohoError` and rendered by the server. Handlers hold the org lock only while
they read or write the org; JSON encoding happens outside it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from . import coql, metadata
from .auth import TokenAuthority
from .model import CustomField, resolve_module
from .org import DELETED_TYPES, USER_TYPES, SandboxOrg
from .paging import MAX_PER_PAGE, PageTokens, choice, modified_since, parse_list_request, positive_int
from .writes import MAX_RECORDS_PER_WRITE
from .zoho_format import ZohoError, parse_datetime


@dataclass
class Request:
    method: str
    path: str
    params: Mapping[str, str]
    headers: Mapping[str, str]  # case-insensitive (an email.message.Message from http.server)
    body: bytes
    base_url: str  # scheme://host:port the client reached us at (becomes api_domain)
    path_params: Mapping[str, str] = field(default_factory=dict)
    user_id: str = ""
    module: str = ""

    def json_body(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8") or "null")
        except (UnicodeDecodeError, ValueError):
            raise ZohoError(
                "INVALID_DATA", {"expected_data_type": "jsonobject"}, message="body is not valid JSON"
            ) from None


@dataclass
class Response:
    status: int
    payload: Any = None  # None: no body (204 / 304)
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a body sent as is (fault injection), with `content_type`
    content_type: str = ""
    drop: bool = False  # close the connection without answering (fault injection)


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """A path pattern; `template` names it in stats ("{module}" is replaced by the module's name)."""

    template: str
    pattern: re.Pattern[str]
    handlers: Mapping[str, Handler]
    authenticated: bool = True  # a Zoho API call: needs an access token, counts for expire_tokens_after
    counted: bool = True  # shows in stats (the sandbox's own control routes do not)

    @classmethod
    def of(cls, template: str, handlers: Mapping[str, Handler], **flags: bool) -> Route:
        regex = (
            re.escape(template).replace(r"\{module\}", r"(?P<module>[A-Za-z0-9_]+)").replace(r"\{id\}", r"(?P<id>\d+)")
        )
        return cls(template, re.compile(f"^{regex}$"), handlers, **flags)

    def stats_path(self, module: str | None) -> str:
        return self.template if module is None else self.template.replace("{module}", module)


class ZohoApi:
    def __init__(self, org: SandboxOrg, auth: TokenAuthority, page_tokens: PageTokens) -> None:
        self.org = org
        self.auth = auth
        self.page_tokens = page_tokens

    def routes(self) -> list[Route]:
        return [
            Route.of("/oauth/v2/token", {"POST": self.token}, authenticated=False),
            Route.of("/crm/v8/users", {"GET": self.users}),
            Route.of("/crm/v8/settings/layouts", {"GET": self.layouts}),
            Route.of("/crm/v8/settings/pipeline", {"GET": self.pipeline}),
            Route.of("/crm/v8/settings/fields", {"GET": self.fields, "POST": self.create_fields}),
            Route.of("/crm/v8/settings/fields/{id}", {"PATCH": self.update_field, "DELETE": self.delete_field}),
            Route.of("/crm/v8/coql", {"POST": self.coql}),
            Route.of("/crm/v8/org", {"GET": self.organization}),
            Route.of("/crm/v8/org/currencies", {"GET": self.currencies, "POST": self.add_currencies}),
            Route.of("/crm/v8/{module}/deleted", {"GET": self.deleted}),
            Route.of("/crm/v8/{module}/{id}/Stage_History", {"GET": self.stage_history}),
            Route.of(
                "/crm/v8/{module}/{id}",
                {"GET": self.get_record, "PUT": self.update_record, "DELETE": self.delete_record},
            ),
            Route.of(
                "/crm/v8/{module}",
                {
                    "GET": self.list_records,
                    "POST": self.insert_records,
                    "PUT": self.update_records,
                    "DELETE": self.delete_records,
                },
            ),
        ]

    # -- accounts ---------------------------------------------------------------------------

    def token(self, req: Request) -> Response:
        params = dict(req.params)
        if "x-www-form-urlencoded" in req.headers.get("Content-Type", ""):
            params.update(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        return Response(200, self.auth.grant(params, req.headers.get("Authorization"), req.base_url))

    # -- records ----------------------------------------------------------------------------

    def list_records(self, req: Request) -> Response:
        """`GET /{module}`: only the requested fields (+ id), paged by `page` or `page_token`.

        An empty result is 204, or 304 when `If-Modified-Since` filtered every record out.
        """
        if req.params.get("ids"):
            return self.records_by_id(req)
        org = self.org
        request = parse_list_request(req.module, req.params, req.headers.get("If-Modified-Since"), org.renderer.tz)
        query = request.query
        with org.lock:
            selection = org.select(query.module, query.sort_by, query.converted, query.modified_since)
            if request.page_token is not None:
                cursor = self.page_tokens.read(request.page_token, req.user_id, query)
                page, served = cursor.page, cursor.served
                start = selection.rank_after(cursor.last_key, query.descending)
                count = min(query.per_page, self.page_tokens.remaining(served))  # the chain ends at the limit
            else:
                page = request.page
                start = served = (page - 1) * query.per_page
                count = query.per_page
            records = selection.window(start, count, query.descending)
            if not records:
                unfiltered = (
                    query.modified_since is not None
                    and not selection.keys
                    and org.select(query.module, query.sort_by, query.converted).keys
                )
                return Response(304 if unfiltered else 204)
            plan = org.renderer.plan(org.spec(query.module), query.fields)
            data = [org.renderer.record(r, plan) for r in records]
            more = start + len(records) < len(selection.keys)
            next_token, expiry = None, None
            if more:
                last_key = selection.key_at(start + len(records) - 1, query.descending)
                next_token, expires_at = self.page_tokens.issue(
                    req.user_id, query, last_key, page + 1, served + len(records)
                )
                expiry = org.renderer.datetime(expires_at)
        return Response(
            200,
            {
                "data": data,
                "info": {
                    "call": False,
                    "per_page": query.per_page,
                    "next_page_token": next_token,
                    "count": len(data),
                    "sort_by": query.sort_by,
                    "page": page,
                    "previous_page_token": None,
                    "page_token_expiry": expiry,
                    "sort_order": query.sort_order,
                    "email": False,
                    "more_records": more,
                },
            },
        )

    def coql(self, req: Request) -> Response:
        body = req.json_body()
        answer = coql.run(self.org, body.get("select_query") if isinstance(body, dict) else None)
        return Response(204) if answer is None else Response(200, answer)

    def records_by_id(self, req: Request) -> Response:
        """`GET /{module}?ids=1,2,...`: those records (at most 100), in the order asked, unknown ids skipped."""
        ids = [i.strip() for i in req.params["ids"].split(",") if i.strip()]
        if len(ids) > MAX_RECORDS_PER_WRITE:
            raise ZohoError("LIMIT_EXCEEDED", {"limit": MAX_RECORDS_PER_WRITE, "param_name": "ids"})
        fields = [f.strip() for f in req.params.get("fields", "").split(",") if f.strip()]
        if not fields:
            raise ZohoError("REQUIRED_PARAM_MISSING", {"param_name": "fields"})
        org = self.org
        with org.lock:
            plan = org.renderer.plan(org.spec(req.module), fields)
            data = [org.renderer.record(r, plan) for i in ids if (r := org.record(req.module, i)) is not None]
        if not data:
            return Response(204)
        return Response(
            200, {"data": data, "info": {"per_page": len(data), "count": len(data), "page": 1, "more_records": False}}
        )

    def get_record(self, req: Request) -> Response:
        org = self.org
        with org.lock:
            record = org.record(req.module, req.path_params["id"])
            if record is None:
                return Response(204)
            return Response(200, {"data": [org.renderer.record(record, org.renderer.plan(org.spec(req.module)))]})

    def insert_records(self, req: Request) -> Response:
        return _write_response(self.org.insert(req.module, _data_items(req), req.user_id), 201)

    def update_records(self, req: Request) -> Response:
        return _write_response(self.org.update(req.module, _data_items(req), req.user_id), 200)

    def update_record(self, req: Request) -> Response:
        items = _data_items(req)
        for item in items:
            if isinstance(item, dict):
                item["id"] = req.path_params["id"]
        return _write_response(self.org.update(req.module, items, req.user_id), 200)

    def delete_records(self, req: Request) -> Response:
        ids = [i.strip() for i in req.params.get("ids", "").split(",") if i.strip()]
        if not ids:
            raise ZohoError("REQUIRED_PARAM_MISSING", {"param_name": "ids"})
        if len(ids) > MAX_RECORDS_PER_WRITE:
            raise ZohoError("LIMIT_EXCEEDED", {"limit": MAX_RECORDS_PER_WRITE, "param_name": "ids"})
        return _write_response(self.org.delete(req.module, ids, req.user_id), 200)

    def delete_record(self, req: Request) -> Response:
        return _write_response(self.org.delete(req.module, [req.path_params["id"]], req.user_id), 200)

    def deleted(self, req: Request) -> Response:
        """`GET /{module}/deleted`: the deletion log; `If-Modified-Since` applies to deleted_time."""
        kind = req.params.get("type") or "all"
        if kind not in DELETED_TYPES:
            raise ZohoError("PATTERN_NOT_MATCHED", {"param_name": "type"})
        since = modified_since(req.headers.get("If-Modified-Since"), self.org.renderer.tz)
        return _paged(req, "data", self.org.deleted_records(req.module, kind, since))

    def stage_history(self, req: Request) -> Response:
        """`GET /Deals/{id}/Stage_History`: the deal's stage history related list, newest first, paged.

        Related-list reads take `fields` like list reads do; only the requested fields (+ id) come back.
        """
        if req.module != "Deals":
            raise ZohoError("INVALID_DATA", {"param_name": "related_list"}, message="the related list is not supported")
        fields = [f for f in req.params.get("fields", "").split(",") if f]
        if not fields:
            raise ZohoError("REQUIRED_PARAM_MISSING", {"param_name": "fields"})
        rows = self.org.stage_history(req.path_params["id"])
        if rows is None:
            raise ZohoError("INVALID_DATA", {"param_name": "id"}, message="the id given seems to be invalid")
        return _paged(req, "data", [{k: v for k, v in row.items() if k == "id" or k in fields} for row in rows])

    # -- users and settings -----------------------------------------------------------------

    def users(self, req: Request) -> Response:
        """`GET /users`; `If-Modified-Since` keeps the users modified since (304 when none is)."""
        kind = choice(req.params, "type", USER_TYPES, "AllUsers")
        users = self.org.users(kind)
        since = modified_since(req.headers.get("If-Modified-Since"), self.org.renderer.tz)
        if since is not None:
            tz = self.org.renderer.tz
            users = [u for u in users if parse_datetime(u["Modified_Time"], tz) >= since]
            if not users:
                return Response(304)
        return _paged(req, "users", users)

    def layouts(self, req: Request) -> Response:
        return Response(200, {"layouts": self.org.layouts(self._settings_module(req))})

    def pipeline(self, req: Request) -> Response:
        layout_id = req.params.get("layout_id")
        if not layout_id:
            raise ZohoError("REQUIRED_PARAM_MISSING", {"param_name": "layout_id"})
        if self.org.layout_module(layout_id) != "Deals":
            raise ZohoError("INVALID_DATA", {"param_name": "layout_id"})
        return Response(200, {"pipeline": self.org.pipelines()})

    def currencies(self, req: Request) -> Response:
        """`GET /org/currencies`; Zoho refuses it while the org has only its home currency."""
        currencies = self.org.currencies_payload()
        if len(currencies) < 2:
            raise ZohoError("CURRENCIES_NOT_ENABLED")
        return Response(200, {"currencies": currencies})

    def add_currencies(self, req: Request) -> Response:
        """`POST /org/currencies` (Add Currencies): one result per currency, as record writes answer."""
        body = req.json_body()
        items = body.get("currencies") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise ZohoError("REQUIRED_PARAM_MISSING", {"param_name": "currencies"})
        results = [self.org.add_currency(item, req.user_id) for item in items]
        saved = sum(r["status"] == "success" for r in results)
        return Response(201 if saved == len(results) else 400 if saved == 0 else 207, {"currencies": results})

    def fields(self, req: Request) -> Response:
        module = req.params.get("module")
        if not module:
            raise ZohoError("REQUIRED_PARAM_MISSING", {"param_name": "module"})
        return Response(200, {"fields": metadata.module_fields(self.org, module)})

    def create_fields(self, req: Request) -> Response:
        """`POST /settings/fields?module=` (Create Custom Fields): one result per field, as record writes answer.

        Each item names `field_label` and `data_type` (picklists their `pick_list_values`), optionally its
        `api_name`; records created or edited from now on carry values for it."""
        module = self._settings_module(req)
        results = []
        for item in _field_items(req):
            try:
                field = self.org.add_field(
                    module,
                    str(item.get("field_label") or ""),
                    str(item.get("data_type") or ""),
                    _pick_list(item),
                    api_name=item.get("api_name"),
                )
            except (ValueError, TypeError) as error:
                results.append(_field_error(error))
                continue
            results.append(
                {"code": "SUCCESS", "details": {"id": field.id}, "message": "field created", "status": "success"}
            )
        return _fields_response(results, 201)

    def update_field(self, req: Request) -> Response:
        """`PATCH /settings/fields/{id}?module=` (Update Custom Field): here, a change of its data type."""
        module, field = self._custom_field(req)
        item = _field_items(req)[0]
        try:
            self.org.retype_field(
                module, field.api_name, str(item.get("data_type") or field.data_type), _pick_list(item)
            )
        except (ValueError, TypeError) as error:
            return _fields_response([_field_error(error)], 200)
        return _fields_response(
            [{"code": "SUCCESS", "details": {"id": field.id}, "message": "field updated", "status": "success"}], 200
        )

    def delete_field(self, req: Request) -> Response:
        """`DELETE /settings/fields/{id}?module=` (Delete Custom Field): the field and its values are gone."""
        module, field = self._custom_field(req)
        self.org.remove_field(module, field.api_name)
        return _fields_response(
            [{"code": "SUCCESS", "details": {"id": field.id}, "message": "field deleted", "status": "success"}], 200
        )

    def _settings_module(self, req: Request) -> str:
        raw = req.params.get("module")
        if not raw:
            raise ZohoError("REQUIRED_PARAM_MISSING", {"param_name": "module"})
        spec = resolve_module(raw)
        if spec is None:
            raise ZohoError("INVALID_MODULE", {"param_name": "module"})
        return spec.api_name

    def _custom_field(self, req: Request) -> tuple[str, CustomField]:
        """The module and the custom field a `/settings/fields/{id}` path names (standard fields cannot change)."""
        module = self._settings_module(req)
        field = next((f for f in self.org.custom_fields(module) if f.id == req.path_params["id"]), None)
        if field is None:
            raise ZohoError("INVALID_DATA", {"param_name": "id"}, message="the id given seems to be invalid")
        return module, field

    def organization(self, req: Request) -> Response:
        return Response(200, {"org": [metadata.organization(self.org)]})


def _data_items(req: Request) -> list[Any]:
    body = req.json_body()
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise ZohoError("REQUIRED_PARAM_MISSING", {"param_name": "data"})
    if len(items) > MAX_RECORDS_PER_WRITE:
        raise ZohoError("LIMIT_EXCEEDED", {"limit": MAX_RECORDS_PER_WRITE, "param_name": "data"})
    return items


def _field_items(req: Request) -> list[dict[str, Any]]:
    body = req.json_body()
    items = body.get("fields") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
        raise ZohoError("REQUIRED_PARAM_MISSING", {"param_name": "fields"})
    return items


def _pick_list(item: Mapping[str, Any]) -> list[str]:
    """The values of a field item's `pick_list_values` ([{"display_value", "actual_value"}, ...])."""
    entries = item.get("pick_list_values") or []
    values = [entry.get("actual_value") or entry.get("display_value") for entry in entries if isinstance(entry, dict)]
    return [str(value) for value in values if value]


def _field_error(error: Exception) -> dict[str, Any]:
    return {"code": "INVALID_DATA", "details": {}, "message": str(error), "status": "error"}


def _fields_response(results: list[dict[str, Any]], ok_status: int) -> Response:
    saved = sum(r["status"] == "success" for r in results)
    return Response(ok_status if saved == len(results) else 400 if saved == 0 else 207, {"fields": results})


def _write_response(results: list[dict[str, Any]], ok_status: int) -> Response:
    """Zoho answers a write with one result per record: all saved -> 200/201, none -> 400, some -> 207."""
    saved = sum(r["status"] == "success" for r in results)
    status = ok_status if saved == len(results) else 400 if saved == 0 else 207
    return Response(status, {"data": results})


def _paged(req: Request, key: str, items: list[dict[str, Any]]) -> Response:
    """Plain `page`/`per_page` paging with the short `info` of the users and deleted-records APIs."""
    per_page = min(positive_int(req.params, "per_page", MAX_PER_PAGE), MAX_PER_PAGE)
    page = positive_int(req.params, "page", 1)
    chunk = items[(page - 1) * per_page : page * per_page]
    if not chunk:
        return Response(204)
    return Response(
        200,
        {
            key: chunk,
            "info": {
                "per_page": per_page,
                "count": len(chunk),
                "page": page,
                "more_records": page * per_page < len(items),
            },
        },
    )
