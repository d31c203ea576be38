"""`POST /crm/v8/coql`: the practical subset of Zoho's CRM Object Query Language a sync needs.

    select id, Last_Name from Leads where Modified_Time = '2026-11-20T10:00:00+05:30' and id > 123
    order by id asc limit 2000

Supported, with Zoho's limits and errors: SELECT of record fields (lookups are rendered `{"id"}` only,
as Zoho's COQL does), FROM a module, a mandatory WHERE of comparisons (`= != > >= < <=`, `between`,
`in`, `not in`, `is null`, `is not null`) joined by `and`/`or` with parentheses, ORDER BY fields with
asc/desc (default: id ascending), and `limit [offset,] count` or `limit count offset n`: at most
2,000 records a call (LIMIT_EXCEEDED beyond) and none past the 100,000th by offset, which is why a
sync pages by keyset (`id > last id`) instead. Converted leads are included (COQL has no `converted`
parameter; filter on Converted__s). An empty result is 204.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .model import Kind, ModuleSpec, field_value, resolve_module
from .org import SandboxOrg
from .zoho_format import ZohoError, parse_datetime

MAX_LIMIT = 2_000
MAX_OFFSET_REACH = 100_000
_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)|(?P<op>>=|<=|!=|=|>|<|\(|\)|,)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.$]*))"
)
_KEYWORDS = frozenset(
    {
        "select",
        "from",
        "where",
        "order",
        "by",
        "limit",
        "offset",
        "and",
        "or",
        "asc",
        "desc",
        "between",
        "in",
        "not",
        "is",
        "null",
        "true",
        "false",
    }
)

Predicate = Callable[[Any], bool]


@dataclass
class Query:
    module: ModuleSpec
    fields: list[str]
    where: Predicate
    order: list[tuple[str, bool]]  # (field, descending)
    offset: int
    limit: int


def _syntax(near: str) -> ZohoError:
    return ZohoError("SYNTAX_ERROR", {"near": near}, message="error occured while parsing the query")


class _Parser:
    def __init__(self, text: str, org: SandboxOrg) -> None:
        self.tokens: list[tuple[str, str]] = []
        self.org = org
        position = 0
        text = text.strip().rstrip(";")
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise _syntax(text[position : position + 20])
            kind = match.lastgroup or ""
            value = match.group(kind)
            if kind == "word" and value.lower() in _KEYWORDS:
                kind, value = "kw", value.lower()
            self.tokens.append((kind, value))
            position = match.end()
        self.index = 0
        self.module: ModuleSpec | None = None

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.index] if self.index < len(self.tokens) else ("end", "")

    def take(self, kind: str, value: str | None = None) -> str:
        got = self.peek()
        if got[0] != kind or (value is not None and got[1] != value):
            raise _syntax(got[1] or "end of query")
        self.index += 1
        return got[1]

    def accept(self, kind: str, value: str) -> bool:
        if self.peek() == (kind, value):
            self.index += 1
            return True
        return False

    def query(self) -> Query:
        self.take("kw", "select")
        fields = [self.take("word")]
        while self.accept("op", ","):
            fields.append(self.take("word"))
        self.take("kw", "from")
        module = resolve_module(self.take("word"))
        if module is None:
            raise ZohoError("INVALID_QUERY", {"clause": "from"}, message="invalid module")
        self.module = module = self.org.spec(module.api_name)  # the org's custom fields are columns too
        for name in fields:
            self.kind(name)
        if self.peek() != ("kw", "where"):
            raise ZohoError(
                "SYNTAX_ERROR",
                {"clause": "where"},
                message="The query does not contain either proper criteria, base table, or the where clause",
            )
        self.take("kw", "where")
        where = self.expression()
        order: list[tuple[str, bool]] = []
        if self.accept("kw", "order"):
            self.take("kw", "by")
            while True:
                name = self.take("word")
                self.kind(name)
                descending = self.accept("kw", "desc")
                if not descending:
                    self.accept("kw", "asc")
                order.append((name, descending))
                if not self.accept("op", ","):
                    break
        offset, limit = 0, 200
        if self.accept("kw", "limit"):
            first = int(self.take("number"))
            if self.accept("op", ","):
                offset, limit = first, int(self.take("number"))
            elif self.accept("kw", "offset"):
                limit, offset = first, int(self.take("number"))
            else:
                limit = first
        if self.peek()[0] != "end":
            raise _syntax(self.peek()[1])
        if limit < 1 or limit > MAX_LIMIT or offset + limit > MAX_OFFSET_REACH:
            raise ZohoError(
                "LIMIT_EXCEEDED", {"limit": MAX_LIMIT, "offset_reach": MAX_OFFSET_REACH}, message="limit exceeded"
            )
        return Query(module, fields, where, order or [("id", False)], offset, limit)

    def kind(self, name: str) -> Kind:
        assert self.module is not None
        kind = self.module.kinds.get(name)
        if kind is None:
            raise ZohoError("INVALID_QUERY", {"column_name": name}, message="column given seems to be invalid")
        return kind

    def expression(self) -> Predicate:
        terms = [self.term()]
        while self.accept("kw", "or"):
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else (lambda r, ts=tuple(terms): any(t(r) for t in ts))

    def term(self) -> Predicate:
        factors = [self.factor()]
        while self.accept("kw", "and"):
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else (lambda r, fs=tuple(factors): all(f(r) for f in fs))

    def factor(self) -> Predicate:
        if self.accept("op", "("):
            inner = self.expression()
            self.take("op", ")")
            return inner
        name = self.take("word")
        kind = self.kind(name)
        get = _getter(name, kind, custom=name in self.module.custom)
        if self.accept("kw", "is"):
            negate = self.accept("kw", "not")
            self.take("kw", "null")
            return (lambda r: get(r) is not None) if negate else (lambda r: get(r) is None)
        if self.accept("kw", "between"):
            low = self.value(kind)
            self.take("kw", "and")
            high = self.value(kind)
            return lambda r: (v := get(r)) is not None and low <= v <= high
        negate = self.accept("kw", "not")
        if self.accept("kw", "in"):
            self.take("op", "(")
            values = {self.value(kind)}
            while self.accept("op", ","):
                values.add(self.value(kind))
            self.take("op", ")")
            return (lambda r: get(r) not in values) if negate else (lambda r: get(r) in values)
        if negate:
            raise _syntax("not")
        op = self.take("op")
        if op not in _COMPARE:
            raise _syntax(op)
        value = self.value(kind)
        compare = _COMPARE[op]
        return lambda r: (v := get(r)) is not None and compare(v, value)

    def value(self, kind: Kind) -> Any:
        token_kind, text = self.peek()
        self.index += 1
        try:
            if token_kind == "string":
                text = text[1:-1].replace("''", "'")
                if kind is Kind.DATETIME:
                    return parse_datetime(text, self.org.renderer.tz)
                if kind is Kind.ID:
                    return int(text)
                return text
            if token_kind == "number":
                return int(text) if kind is Kind.ID or "." not in text else float(text)
            if token_kind == "kw" and text in ("true", "false"):
                return text == "true"
        except ValueError:
            pass
        raise ZohoError("INVALID_QUERY", {"value": text}, message="value given seems to be invalid for the column")


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _getter(name: str, kind: Kind, *, custom: bool = False) -> Callable[[Any], Any]:
    if custom:
        return lambda r: field_value(r, name)
    if kind is Kind.ID:
        return lambda r: int(r.id)
    if kind is Kind.LOOKUP:
        return lambda r: None if getattr(r, name) is None else int(getattr(r, name).id)
    if kind is Kind.USER:
        return lambda r: None if getattr(r, name) is None else int(getattr(r, name))
    return lambda r: getattr(r, name)


def run(org: SandboxOrg, select_query: Any) -> dict[str, Any] | None:
    """The answer to one COQL query (None: no records, sent as 204)."""
    if not isinstance(select_query, str) or not select_query.strip():
        raise ZohoError("REQUIRED_PARAM_MISSING", {"param_name": "select_query"})
    query = _Parser(select_query, org).query()
    with org.lock:
        matching = [r for r in org.select(query.module.api_name, "id").records if query.where(r)]
        for name, descending in reversed(query.order):
            get = _getter(name, query.module.kinds[name], custom=name in query.module.custom)
            matching.sort(key=lambda r: (get(r) is not None, get(r)), reverse=descending)
        window = matching[query.offset : query.offset + query.limit]
        if not window:
            return None
        render = org.renderer
        rows = []
        for record in window:
            row: dict[str, Any] = {}
            for name in query.fields:
                kind, value = query.module.kinds[name], field_value(record, name)
                if kind is Kind.DATETIME:
                    value = render.datetime(value)
                elif kind is Kind.DATE:
                    value = None if value is None else value.isoformat()
                elif kind is Kind.LOOKUP:
                    value = None if value is None else {"id": value.id}
                elif kind is Kind.USER:
                    value = None if value is None else {"id": value}
                row[name] = value
            row.setdefault("id", record.id)
            rows.append(row)
    return {"data": rows, "info": {"count": len(rows), "more_records": query.offset + len(window) < len(matching)}}
