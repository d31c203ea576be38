"""Metadata routes in Zoho's shape: `/settings/fields?module=` and `/org`.

Zoho's own SDK reads these before it parses a single record: `/settings/fields` tells it each field's
`data_type` (how to turn the JSON value into a Python value) and, for a lookup, which module it points
at, whose fields it then fetches too; `/org` gives it the `zgid` it files its tokens under. The
field list is derived from the record dataclasses of `model.py`, so a field added there is described
here at once, followed by the org's custom fields (`custom_field: true`, in the order they were added;
the Create Custom Fields API adds one). Accounts and Contacts exist in every Zoho org and are the
targets of the Leads and Deals lookups; the sandbox does not serve their records, but describes their
main fields so a client that follows the lookups finds them. Any other module is INVALID_MODULE, as on Zoho.

Field types follow Zoho's Leads/Deals layouts: picklists, currency amounts, email, phone, textarea.
Picklist values are the ones the record factory uses.
"""

from __future__ import annotations

from typing import Any

from . import factory
from .model import MODULES, STAGES, CustomField, Kind
from .org import SandboxOrg
from .zoho_format import ZohoError

# Zoho data types by kind, when the field has no more specific type below.
_DATA_TYPES = {
    Kind.ID: "bigint",
    Kind.TEXT: "text",
    Kind.NUMBER: "double",
    Kind.INTEGER: "integer",
    Kind.BOOLEAN: "boolean",
    Kind.DATE: "date",
    Kind.DATETIME: "datetime",
    Kind.USER: "ownerlookup",
    Kind.LOOKUP: "lookup",
}
_JSON_TYPES = {
    "bigint": "string",
    "text": "string",
    "textarea": "string",
    "email": "string",
    "phone": "string",
    "picklist": "string",
    "website": "string",
    "double": "double",
    "currency": "double",
    "percent": "double",
    "integer": "integer",
    "boolean": "boolean",
    "date": "string",
    "datetime": "string",
    "ownerlookup": "jsonobject",
    "lookup": "jsonobject",
}


def _values(weighted: Any) -> tuple[str, ...]:
    return tuple(v for v in weighted.values if v is not None)


def _lead_statuses() -> tuple[str, ...]:
    statuses: dict[str, None] = {}
    for _, weighted in factory.STATUS_BY_AGE:
        statuses.update(dict.fromkeys(_values(weighted)))
    return tuple(statuses)


# Per module: field -> (Zoho data type, picklist values) where it differs from the kind's default.
_SPECIFIC: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "Leads": {
        "Email": ("email", ()),
        "Phone": ("phone", ()),
        "Description": ("textarea", ()),
        "Lead_Source": ("picklist", _values(factory.LEAD_SOURCES)),
        "Lead_Status": ("picklist", _lead_statuses()),
        "Industry": ("picklist", _values(factory.INDUSTRIES)),
        "Rating": ("picklist", _values(factory.RATINGS)),
        "Annual_Revenue": ("currency", ()),
    },
    "Deals": {
        "Stage": ("picklist", tuple(s.actual_value for s in STAGES)),
        "Lead_Source": ("picklist", _values(factory.LEAD_SOURCES)),
        "Type": ("picklist", ("New Business", "Existing Business")),
        "Reason_For_Loss__s": ("picklist", _values(factory.LOSS_REASONS)),
        "Amount": ("currency", ()),
        "Expected_Revenue": ("currency", ()),
        "Description": ("textarea", ()),
    },
}
# Lookup fields and the module they point at.
_LOOKUP_TARGETS = {
    "Converted_Deal": "Deals",
    "Converted_Account": "Accounts",
    "Converted_Contact": "Contacts",
    "Account_Name": "Accounts",
    "Contact_Name": "Contacts",
}
# Modules every org has that the sandbox describes but does not serve records of.
_DESCRIBED_ONLY: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "Accounts": (
        ("Owner", "ownerlookup", False),
        ("Account_Name", "text", True),
        ("Phone", "phone", False),
        ("Website", "website", False),
        ("Created_Time", "datetime", False),
        ("Modified_Time", "datetime", False),
    ),
    "Contacts": (
        ("Owner", "ownerlookup", False),
        ("First_Name", "text", False),
        ("Last_Name", "text", True),
        ("Full_Name", "text", False),
        ("Email", "email", False),
        ("Account_Name", "lookup", False),
        ("Created_Time", "datetime", False),
        ("Modified_Time", "datetime", False),
    ),
}
_MODULE_NUMBERS = {"Leads": 2_175, "Deals": 2_181, "Accounts": 2_177, "Contacts": 2_179}
_SYSTEM_FIELDS = frozenset({"id", "Created_Time", "Modified_Time", "Created_By", "Modified_By", "Full_Name"})


def module_fields(org: SandboxOrg, module: str) -> list[dict[str, Any]]:
    """`GET /settings/fields?module=<module>`'s `fields` list (INVALID_MODULE for a module Zoho lacks)."""
    name = _module_name(module)
    custom: list[CustomField] = []
    if name in MODULES:
        spec = MODULES[name]
        specific = _SPECIFIC.get(name, {})
        described = []
        for field_name, kind in spec.kinds.items():
            data_type, values = specific.get(field_name, (_DATA_TYPES[kind], ()))
            described.append(
                (field_name, data_type, field_name in spec.mandatory, field_name not in spec.writable, values)
            )
        custom = org.custom_fields(name)
    else:
        described = [(f, t, mandatory, f in _SYSTEM_FIELDS, ()) for f, t, mandatory in _DESCRIBED_ONLY[name]]
    prefix = _id_prefix(org)
    standard = [_field(prefix, name, index, *entry) for index, entry in enumerate(described)]
    return standard + [_custom_field(prefix, name, len(standard) + index, field) for index, field in enumerate(custom)]


def _module_name(module: str) -> str:
    for name in (*MODULES, *_DESCRIBED_ONLY):
        if name.lower() == module.lower():
            return name
    raise ZohoError("INVALID_MODULE", {"param_name": "module"})


def _id_prefix(org: SandboxOrg) -> str:
    return org.organization()["id"][:-12]


def _field(
    prefix: str,
    module: str,
    index: int,
    name: str,
    data_type: str,
    mandatory: bool,
    read_only: bool,
    values: tuple[str, ...],
) -> dict[str, Any]:
    label = name.replace("__s", "").replace("_", " ")
    lookup: dict[str, Any] = {}
    if data_type == "lookup":
        target = _LOOKUP_TARGETS.get(name, "Accounts")
        lookup = {
            "display_label": target,
            "api_name": target[:-1],
            "module": {"api_name": target, "id": f"{prefix}{_MODULE_NUMBERS[target]:012d}"},
            "id": None,
        }
    return {
        "api_name": name,
        "id": f"{prefix}{_MODULE_NUMBERS[module] * 1_000 + index:012d}",
        "field_label": label,
        "display_label": label,
        "data_type": data_type,
        "json_type": _JSON_TYPES.get(data_type, "string"),
        "system_mandatory": mandatory,
        "custom_field": False,
        "created_source": "default",
        "read_only": read_only,
        "field_read_only": read_only,
        "visible": True,
        "length": 120
        if data_type in ("text", "picklist", "email", "phone", "website")
        else 32000
        if data_type == "textarea"
        else 16,
        "decimal_place": 2 if data_type == "currency" else None,
        "lookup": lookup,
        "pick_list_values": [
            {
                "display_value": v,
                "actual_value": v,
                "sequence_number": i + 1,
                "type": "used",
                "id": f"{prefix}{_MODULE_NUMBERS[module] * 1_000_000 + index * 100 + i:012d}",
            }
            for i, v in enumerate(values)
        ],
        "sequence_number": index + 1,
    }


def _custom_field(prefix: str, module: str, index: int, field: CustomField) -> dict[str, Any]:
    """A custom field as Zoho lists it: its own id and label, `custom_field: true`, created in the CRM."""
    described = _field(prefix, module, index, field.api_name, field.data_type, False, False, field.values)
    return {
        **described,
        "id": field.id,
        "field_label": field.label,
        "display_label": field.label,
        "custom_field": True,
        "created_source": "crm",
    }


def organization(org: SandboxOrg) -> dict[str, Any]:
    """`GET /org`'s one entry, with the keys of Zoho's Get Organization response.

    `zgid` identifies the org across Zoho services (the SDK keys its stored tokens by it); the home
    currency comes from the org model when it knows one.
    """
    base = org.organization()
    currency = getattr(org, "home_currency", "USD")
    names = {
        "USD": ("US Dollar", "$", "en_US"),
        "EUR": ("Euro", "€", "de_DE"),
        "INR": ("Indian Rupee", "₹", "en_IN"),
        "GBP": ("Pound Sterling", "£", "en_GB"),
    }
    label, symbol, locale = names.get(currency, (currency, currency, "en_US"))
    return {
        **base,
        "zgid": str(int(base["id"]) % 1_000_000_007),
        "primary_zuid": str(int(org.current_user_id) % 1_000_000_007),
        "iso_code": currency,
        "currency": f"{label} - {currency}",
        "currency_symbol": symbol,
        "currency_locale": locale,
        "country_code": "US",
        "type": "production",
        "max_per_page": 200,
        "mc_status": len(getattr(org, "currencies", ())) > 1,  # multi-currency on once a second currency exists
        "gapps_enabled": False,
        "translation_enabled": False,
        "privacy_settings": False,
        "hipaa_compliance_enabled": False,
        "lite_users_enabled": False,
        "photo_id": None,
        "alias": None,
        "description": None,
        "phone": None,
        "mobile": None,
        "fax": None,
        "website": None,
        "street": None,
        "city": None,
        "state": None,
        "zip": None,
        "employee_count": None,
        "zia_portal_id": None,
        "license_details": {
            "paid_expiry": None,
            "users_license_purchased": 10,
            "trial_type": None,
            "trial_expiry": None,
            "paid": True,
            "paid_type": "enterprise",
            "trial_action": None,
        },
    }
