"""Who gets which briefing: the recipients file and RECIPIENT_PHONE_NUMBER, read and checked in one place.

The recipients file (`RECIPIENTS_FILE`, default `recipients.yml` in the project folder; see
`recipients.example.yml`) lists people by name, WhatsApp number and role:

    people:
      - name: Ana Silva
        whatsapp: "+14155550101"
        role: manager               # the team briefing
      - name: Ben Okafor
        whatsapp: "+14155550102"
        role: owner                 # their own deals
        zoho_user: ben@example.com  # the Zoho user id or email whose deals are theirs

`RECIPIENT_PHONE_NUMBER` (comma-separated E.164 numbers) keeps working: each of its numbers is a manager
without a name. Both sources may be used at once; a number may be listed only once across them.

Everything wrong with them is reported at once, each problem with the file and line it is on
(`recipients.yml:7: ...`), as one `RecipientsError`. The messages never repeat a phone number: they
reach the daily job's log, and the line (or the position in RECIPIENT_PHONE_NUMBER) is enough to find it.

Whether an owner's `zoho_user` is a user of the org is known only once the CRM is loaded:
`users_in_warehouse` reads the loaded users and `resolve_owners` matches them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from warehouse import PROJECT_ROOT, RAW_SCHEMA, ConfigError

Role = Literal["manager", "owner"]
ROLES: tuple[Role, ...] = ("manager", "owner")
FILE_VARIABLE = "RECIPIENTS_FILE"
NUMBERS_VARIABLE = "RECIPIENT_PHONE_NUMBER"
DEFAULT_FILE_NAME = "recipients.yml"
DEFAULT_FILE = PROJECT_ROOT / DEFAULT_FILE_NAME  # read when RECIPIENTS_FILE is not set; may be missing
KEYS = ("name", "whatsapp", "role", "zoho_user")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")  # + then 7 to 15 digits, the first not 0
E164_HINT = "+ country code and number, e.g. +14155550123"
USERS_TABLE = "users"  # dlt's table of the CRM's users in the raw schema

_NULL_TAG = "tag:yaml.org,2002:null"


class RecipientsError(ConfigError):
    """The recipients are malformed. The message lists every problem, each with its file and line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("; ".join(self.problems))


class UsersNotLoaded(LookupError):
    """The warehouse has no users table yet: the CRM was never loaded into it."""


@dataclass(frozen=True)
class Recipient:
    """One person who gets a briefing. `whatsapp` is always `whatsapp:+E164`; `source` says where they were
    listed (`recipients.yml:7`, the line their entry starts on, or `RECIPIENT_PHONE_NUMBER`)."""

    name: str | None
    whatsapp: str = field(repr=False)  # kept out of repr(): reprs reach logs
    role: Role
    zoho_user: str | None
    source: str

    @property
    def digest(self) -> Literal["team", "owner"]:
        """Which briefing they get: the team's (managers) or their own deals' (owners; see `owner_key`)."""
        return "team" if self.role == "manager" else "owner"

    @property
    def owner_key(self) -> str | None:
        """The Zoho user id or email an owner's deals are found by (None for a manager); `resolve_owners`
        turns it into the user id."""
        return self.zoho_user


@dataclass(frozen=True)
class ZohoUser:
    """A user of the Zoho org, as loaded into the warehouse."""

    user_id: str
    email: str | None
    full_name: str | None
    is_active: bool


class Problem(str):
    """A problem `resolve_owners` found, as text naming the line. `warning` when the briefing still goes out
    as configured (an inactive user), else the owner's briefing cannot be made."""

    warning: bool

    def __new__(cls, text: str, *, warning: bool = False) -> Problem:
        problem = super().__new__(cls, text)
        problem.warning = warning
        return problem


# --------------------------------------------------------------------------- loading


def load_recipients(env: Mapping[str, str] = os.environ) -> tuple[Recipient, ...]:
    """Everyone listed in the recipients file and in RECIPIENT_PHONE_NUMBER, the file's people first.

    An empty tuple when neither lists anyone (the caller decides whether that is an error). Raises
    `RecipientsError` listing every problem in the order of the lines: a file named by RECIPIENTS_FILE that
    does not exist, a file that is not a `people:` list, unknown keys, a missing or malformed number, a role
    that is not manager or owner, an owner without `zoho_user` or a manager with one, a number listed twice.
    """
    problems = _Problems()
    path, label = recipients_file(env)
    listed: list[_Listed] = []
    if path is not None:
        listed += _read_file(path, label, problems)
    listed += _read_numbers(env.get(NUMBERS_VARIABLE, ""), problems)

    first: dict[str, _Listed] = {}
    for entry in listed:  # entries with other problems count too: every problem is told at once
        earlier = first.setdefault(entry.whatsapp, entry)
        if earlier is not entry:
            problems.add(entry.order, f"{entry.where}: the same number as {earlier.where}; list each number once")
    if problems:
        raise RecipientsError(problems.texts())
    return tuple(entry.recipient for entry in listed if entry.recipient is not None)


def recipients_file(env: Mapping[str, str] = os.environ) -> tuple[Path | None, str]:
    """The recipients file to read and the name messages call it by; (None, label) when the default file
    does not exist. Raises `RecipientsError` when the file RECIPIENTS_FILE names does not exist."""
    raw = env.get(FILE_VARIABLE, "").strip()
    if not raw:
        return (DEFAULT_FILE if DEFAULT_FILE.is_file() else None), DEFAULT_FILE_NAME
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = PROJECT_ROOT / path  # like DUCKDB_PATH: relative to the project folder
    if not path.exists():
        raise RecipientsError([f"{FILE_VARIABLE}: no file at {path} (copy recipients.example.yml, or unset it)"])
    return path, raw


@dataclass(frozen=True)
class _Listed:
    """A number as listed, where, and the recipient it makes (None when the entry has a problem)."""

    whatsapp: str
    where: str
    order: float
    recipient: Recipient | None


class _Problems:
    """The problems found so far, told in the order of the lines they are on (RECIPIENT_PHONE_NUMBER's last)."""

    def __init__(self) -> None:
        self._found: list[tuple[float, int, str]] = []

    def add(self, order: float, text: str) -> None:
        self._found.append((order, len(self._found), text))

    def count(self) -> int:
        return len(self._found)

    def texts(self) -> list[str]:
        return [text for _, _, text in sorted(self._found)]

    def __bool__(self) -> bool:
        return bool(self._found)


_AFTER_THE_FILE = float("inf")


def _read_file(path: Path, label: str, problems: _Problems) -> list[_Listed]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        problems.add(0, f"{label}: not UTF-8 text")
        return []
    except OSError as exc:
        problems.add(0, f"{label}: cannot be read ({exc.strerror or type(exc).__name__})")
        return []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{label}:{mark.line + 1}" if mark is not None else label
        problems.add(0, f"{where}: not valid YAML ({exc.problem or exc.context})")
        return []
    except yaml.YAMLError as exc:
        problems.add(0, f"{label}: not valid YAML ({exc})")
        return []

    expected = "expected a `people:` list (see recipients.example.yml)"
    if root is None or _is_null(root):
        problems.add(0, f"{label}: the file is empty; {expected}")
        return []
    if not isinstance(root, yaml.MappingNode):
        problems.add(_line(root), f"{label}:{_line(root)}: {expected}")
        return []
    top = _keys(root, label, ("people",), problems)
    if "people" not in top:
        problems.add(_line(root), f"{label}:{_line(root)}: no `people:` list; {expected}")
        return []
    people = top["people"][1]
    if _is_null(people):
        return []  # every entry commented out: RECIPIENT_PHONE_NUMBER may still list someone
    if not isinstance(people, yaml.SequenceNode):
        problems.add(_line(people), f"{label}:{_line(people)}: people must be a list of entries (`- name: ...`)")
        return []
    listed = [_person(entry, label, problems) for entry in people.value]
    return [entry for entry in listed if entry is not None]


def _person(entry: yaml.Node, label: str, problems: _Problems) -> _Listed | None:
    """One entry of `people:`; None when it has no number to tell apart from the others'."""
    line = _line(entry)
    where = f"{label}:{line}"
    if not isinstance(entry, yaml.MappingNode):
        problems.add(line, f"{where}: each person is a mapping of {', '.join(KEYS)}")
        return None
    found = problems.count()
    keys = _keys(entry, label, KEYS, problems)
    values: dict[str, str | None] = {}
    for key, (key_node, value_node) in keys.items():
        if isinstance(value_node, yaml.ScalarNode):
            values[key] = None if _is_null(value_node) else (value_node.value.strip() or None)
        else:
            problems.add(_line(key_node), f"{label}:{_line(key_node)}: {key} must be a single value")
    # A key without a value counts as missing; one with a list or mapping was reported just above.
    missing = {key for key in KEYS if values.get(key) is None and (key not in keys or key in values)}

    def add(key: str | None, text: str) -> None:
        at = _line(keys[key][0]) if key in keys else line
        problems.add(at, f"{label}:{at}: {text}")

    whatsapp = None
    if "whatsapp" in missing:
        add(None, f"whatsapp is missing (the person's number, {E164_HINT})")
    elif values.get("whatsapp") is not None:
        whatsapp = normalise(values["whatsapp"])  # type: ignore[arg-type]
        if whatsapp is None:
            add("whatsapp", f"whatsapp is not a phone number in E.164 ({E164_HINT})")
    role = values.get("role")
    if "role" in missing:
        add(None, "role is missing: manager (the team briefing) or owner (their own deals)")
    elif role is not None and role not in ROLES:
        add("role", f"role {role!r} is not manager (the team briefing) or owner (their own deals)")
    zoho_user = values.get("zoho_user")
    if role == "owner" and "zoho_user" in missing:
        add(None, "an owner needs zoho_user (the Zoho user id or email whose deals are theirs)")
    if role == "manager" and zoho_user is not None:
        add(
            "zoho_user",
            "zoho_user is only for owners; a manager gets the team briefing (set role: owner for their own deals)",
        )

    if whatsapp is None:
        return None
    recipient = None
    if problems.count() == found and role in ROLES:
        recipient = Recipient(
            name=values.get("name"),
            whatsapp=whatsapp,
            role=role,  # type: ignore[arg-type]
            zoho_user=zoho_user,
            source=where,
        )
    return _Listed(whatsapp, where, line, recipient)


def _read_numbers(raw: str, problems: _Problems) -> list[_Listed]:
    numbers = [n.strip() for n in raw.split(",") if n.strip()]
    listed = []
    for position, number in enumerate(numbers, start=1):
        which = f" (number {position} of {len(numbers)})" if len(numbers) > 1 else ""
        whatsapp = normalise(number)
        if whatsapp is None:
            problems.add(
                _AFTER_THE_FILE,
                f"{NUMBERS_VARIABLE}{which}: not a phone number in E.164 ({E164_HINT}, comma-separated)",
            )
            continue
        recipient = Recipient(name=None, whatsapp=whatsapp, role="manager", zoho_user=None, source=NUMBERS_VARIABLE)
        listed.append(_Listed(whatsapp, f"{NUMBERS_VARIABLE}{which}", _AFTER_THE_FILE, recipient))
    return listed


def normalise(number: str) -> str | None:
    """`whatsapp:+E164` from what a user may write (`+1 415-555 0123`, `whatsapp:+14155550123`,
    `0014155550123`), by the rules Twilio's sends use; None when it is not an E.164 number then."""
    from insights.whatsapp import whatsapp_address  # here: insights.whatsapp imports the settings, which import us

    address = whatsapp_address(number)
    return address if E164.match(address.removeprefix("whatsapp:")) else None


def _keys(
    node: yaml.MappingNode, label: str, allowed: tuple[str, ...], problems: _Problems
) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """The mapping's known keys with their (key, value) nodes; unknown and repeated keys are problems."""
    found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        line = _line(key_node)
        if key not in allowed:
            shown = repr(key) if key is not None else "that is not a name"
            problems.add(line, f"{label}:{line}: unknown key {shown} (expected {', '.join(allowed)})")
        elif key in found:
            problems.add(line, f"{label}:{line}: {key} is given twice (also on line {_line(found[key][0])})")
        else:
            found[key] = (key_node, value_node)
    return found


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


# --------------------------------------------------------------------------- owners and the org's users


def users_in_warehouse(conn: Any) -> list[ZohoUser]:
    """The CRM's users as loaded into the raw schema (`zoho_raw.users`), from a `warehouse.connect` connection
    (DuckDB or PostgreSQL). Raises `UsersNotLoaded` when the table is not there yet (no extraction so far)."""
    cur = conn.cursor()  # a DuckDB cursor is a connection of its own; closing it leaves `conn` open
    try:
        cur.execute(
            "select column_name from information_schema.columns "
            f"where table_schema = '{RAW_SCHEMA}' and table_name = '{USERS_TABLE}'"
        )
        columns = {str(row[0]).lower() for row in cur.fetchall()}
        if "id" not in columns:
            raise UsersNotLoaded(f"{RAW_SCHEMA}.{USERS_TABLE} is not in the warehouse yet")
        # dlt adds a column only once a value has been seen in it: a column no user has is read as null.
        wanted = ("id", "email", "full_name", "status")
        cur.execute(
            f"select {', '.join(c if c in columns else 'null' for c in wanted)} from {RAW_SCHEMA}.{USERS_TABLE}"
        )
        rows = cur.fetchall()
    finally:
        cur.close()
    return [
        ZohoUser(
            user_id=str(user_id),
            email=email,
            full_name=full_name,
            is_active=status is None or str(status).strip().lower() == "active",
        )
        for user_id, email, full_name, status in rows
        if user_id is not None
    ]


def resolve_owners(recipients: Iterable[Recipient], users: Iterable[ZohoUser]) -> tuple[dict[str, str], list[str]]:
    """Each owner's `whatsapp` -> the Zoho user id their deals are found by, and the problems (`Problem`s:
    text naming the line, `.warning` for an inactive user, whose deals are still read).

    `zoho_user` matches a user id exactly, or else an email whatever its case.
    """
    users = list(users)
    by_id = {u.user_id: u for u in users}
    by_email: dict[str, list[ZohoUser]] = {}
    for user in users:
        if user.email:
            by_email.setdefault(user.email.strip().casefold(), []).append(user)

    owners: dict[str, str] = {}
    problems: list[str] = []
    for recipient in recipients:
        key = recipient.owner_key
        if recipient.role != "owner" or key is None:
            continue
        user = by_id.get(key)
        if user is None:
            matches = by_email.get(key.strip().casefold(), [])
            if len(matches) > 1:  # Zoho keeps emails unique, but a deleted user may share one: prefer the active
                matches = [u for u in matches if u.is_active] or matches
            if len(matches) > 1:
                problems.append(
                    Problem(
                        f"{recipient.source}: zoho_user {key} is the email of {len(matches)} Zoho "
                        "users; use the user id instead"
                    )
                )
                continue
            user = matches[0] if matches else None
        if user is None:
            problems.append(Problem(f"{recipient.source}: zoho_user {key} is not a user of the Zoho org"))
            continue
        owners[recipient.whatsapp] = user.user_id
        if not user.is_active:
            who = f" ({user.full_name})" if user.full_name else ""
            problems.append(
                Problem(
                    f"{recipient.source}: zoho_user {key}{who} is not active in Zoho; their briefing "
                    "covers the deals they still own",
                    warning=True,
                )
            )
    return owners, problems
