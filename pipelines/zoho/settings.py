"""Constants of the Zoho CRM source: data centres, endpoints, fields and the raw column types.

The module field lists are the standard fields the models rely on, with the types their
columns always have: they are requested from every org and declared to dlt whether or
not the org's metadata lists them. Every other field the org's `/settings/fields` lists
(its custom fields above all) is requested and loaded too, typed by `field_kind` from
its Zoho data type: a field the org adds needs no change here.
"""

from __future__ import annotations

from typing import Literal

API_PATH = "/crm/v8"
TOKEN_PATH = "/oauth/v2/token"

# Zoho runs one accounts server and one API host per data centre; a token only works in its own DC.
# Canada is the odd one out: accounts.zohocloud.ca, not accounts.zoho.ca.
ACCOUNTS_URLS = {
    "com": "https://accounts.zoho.com",
    "eu": "https://accounts.zoho.eu",
    "in": "https://accounts.zoho.in",
    "com.au": "https://accounts.zoho.com.au",
    "jp": "https://accounts.zoho.jp",
    "ca": "https://accounts.zohocloud.ca",
    "com.cn": "https://accounts.zoho.com.cn",
    "sa": "https://accounts.zoho.sa",
}
# Used only when the token response lacks `api_domain` (Zoho always sends it).
API_DOMAINS = {dc: f"https://www.zohoapis.{dc}" for dc in ACCOUNTS_URLS}
DEFAULT_DC = "com"

PAGE_SIZE = 200  # Zoho's maximum per request
FIELDS_PER_REQUEST = 50  # API names one `fields=` parameter may carry (more: 400 LIMIT_EXCEEDED)
# One page_token chain reaches this many records; the page after them is 400 PAGINATION_LIMIT_EXCEEDED.
PAGE_TOKEN_LIMIT = 100_000
COQL_LIMIT = 2_000  # records one COQL call returns at most
IDS_PER_REQUEST = 100  # record ids one `GET /{module}?ids=` call takes at most
OVERLAP_MINUTES = 10  # re-read this much before the last cursor: late commits and clock skew
TOKEN_REFRESH_MARGIN_SECONDS = 300  # renew an access token this long before Zoho says it expires
REQUEST_TIMEOUT_SECONDS = (10.0, 60.0)  # connect, read
RETRY_ATTEMPTS = 5  # per request, for 429, 5xx and connection errors
RETRY_BACKOFF_SECONDS = 1.0  # doubled after each failed attempt
RETRY_MAX_DELAY_SECONDS = 60.0
# A run loads leads and deals in loads of at most this many records each: a run that fails or is
# killed keeps every load it finished, and memory stays that of one load however big the org.
RECORDS_PER_LOAD = 20_000
# Pipelines, stages and currencies are read again when a deal names one the warehouse does not know, and
# at least this often (a stage's forecast type can change while no deal does).
METADATA_MAX_AGE_DAYS = 7
# Stop cleanly (and resume next run) once Zoho reports fewer API credits left than this; 0: never.
CREDIT_FLOOR = 0

MODULES = ("Leads", "Deals")

# How a Zoho field lands in the warehouse. Lookups are objects that dlt flattens into
# `<field>__id`, `<field>__name` (and `__email` for users); lists (a multi-select picklist) and
# other objects stay whole in one JSON column rather than becoming child tables.
FieldKind = Literal["text", "double", "bigint", "bool", "date", "timestamp", "user", "record", "json"]
LOOKUP_PARTS: dict[FieldKind, tuple[str, ...]] = {"user": ("id", "name", "email"), "record": ("id", "name")}

# `/settings/fields` data types the Records API does not return in a list (Zoho sends subforms and
# multi-select lookups with a single record's GET only, and files as attachments).
UNLISTED_DATA_TYPES = frozenset({"subform", "multiselectlookup", "multiuserlookup", "fileupload", "imageupload"})
# A field's kind by its `json_type`, when its `data_type` does not say more (see `field_kind`).
JSON_TYPE_KINDS: dict[str, FieldKind] = {
    "string": "text",
    "double": "double",
    "integer": "bigint",
    "boolean": "bool",
    "jsonobject": "json",
    "jsonarray": "json",
}


def field_kind(data_type: str, json_type: str) -> FieldKind | None:
    """The column kind of a field `/settings/fields` describes; None for one a record list cannot return.

    Dates and datetimes are text in JSON, lookups objects: their `data_type` tells; every other field
    follows its `json_type` (a picklist is a string, a currency or percent a double, a number an
    integer), and a type unknown here is kept as text.
    """
    if data_type in UNLISTED_DATA_TYPES:
        return None
    if data_type in ("ownerlookup", "userlookup"):
        return "user"
    if data_type == "lookup":
        return "record"
    if data_type == "datetime":
        return "timestamp"
    if data_type == "date":
        return "date"
    return JSON_TYPE_KINDS.get(json_type, "text")


LEADS_FIELDS: dict[str, FieldKind] = {
    "Owner": "user",
    "First_Name": "text",
    "Last_Name": "text",
    "Full_Name": "text",
    "Company": "text",
    "Email": "text",
    "Phone": "text",
    "Lead_Source": "text",
    "Lead_Status": "text",
    "Industry": "text",
    "Annual_Revenue": "double",
    "No_of_Employees": "bigint",
    "Rating": "text",
    "Country": "text",
    "Description": "text",
    "Currency": "text",
    "Exchange_Rate": "double",
    "Created_Time": "timestamp",
    "Modified_Time": "timestamp",
    "Created_By": "user",
    "Modified_By": "user",
    "Converted__s": "bool",
    "Converted_Date_Time": "timestamp",
    "Converted_Deal": "record",
    "Converted_Account": "record",
    "Converted_Contact": "record",
    "Record_Status__s": "text",
}

DEALS_FIELDS: dict[str, FieldKind] = {
    "Owner": "user",
    "Deal_Name": "text",
    "Account_Name": "record",
    "Contact_Name": "record",
    "Stage": "text",
    "Pipeline": "text",
    "Amount": "double",
    "Probability": "bigint",
    "Expected_Revenue": "double",
    "Closing_Date": "date",
    "Lead_Source": "text",
    "Type": "text",
    "Next_Step": "text",
    "Reason_For_Loss__s": "text",
    "Description": "text",
    # Units of Currency per one unit of the org's home currency: the home value is Amount / Exchange_Rate.
    "Currency": "text",
    "Exchange_Rate": "double",
    "Created_Time": "timestamp",
    "Modified_Time": "timestamp",
    "Created_By": "user",
    "Modified_By": "user",
}

MODULE_FIELDS: dict[str, dict[str, FieldKind]] = {"Leads": LEADS_FIELDS, "Deals": DEALS_FIELDS}

# `/users` and `/{module}/deleted` are not field-selectable; these describe what they return.
USERS_FIELDS: dict[str, FieldKind] = {
    "full_name": "text",
    "first_name": "text",
    "last_name": "text",
    "email": "text",
    "status": "text",
    "role": "record",
    "profile": "record",
    "time_zone": "text",
    "Modified_Time": "timestamp",
    "created_time": "timestamp",
}

DELETED_FIELDS: dict[str, FieldKind] = {
    "module": "text",
    "type": "text",
    "display_name": "text",
    "deleted_time": "timestamp",
    "deleted_by": "record",
    "created_by": "record",
}

DEAL_STAGES_FIELDS: dict[str, FieldKind] = {
    "pipeline_id": "text",
    "pipeline": "text",
    "stage": "text",
    "display_value": "text",
    "sequence_number": "bigint",
    "forecast_type": "text",
    "forecast_category": "text",
    "probability": "bigint",
}

# A deal's Stage History (Zoho's DealHistory module, read as the `Stage_History` related list of each deal):
# one row per change of Stage, Amount, Probability or Closing_Date, with the values after the change.
# Read once, on the first sync, to date the past before the warehouse kept its own history.
STAGE_HISTORY_RELATED_LIST = "Stage_History"
STAGE_HISTORY_FIELDS: dict[str, FieldKind] = {
    "deal_id": "text",
    "Stage": "text",
    "Amount": "double",
    "Probability": "bigint",
    "Expected_Revenue": "double",
    "Closing_Date": "date",
    "Modified_Time": "timestamp",
    "Modified_By": "record",
}

# `/org/currencies`: the org's currencies; `is_base` marks the home currency every total is converted to.
CURRENCIES_FIELDS: dict[str, FieldKind] = {
    "iso_code": "text",
    "name": "text",
    "symbol": "text",
    "exchange_rate": "double",
    "is_base": "bool",
    "is_active": "bool",
    "modified_time": "timestamp",
}
# Zoho's answer to `/org/currencies` while the org has only its home currency; `/org` then names it.
CURRENCIES_NOT_ENABLED = "CURRENCIES_NOT_ENABLED"

# Tombstones carry this flag; dlt deletes the row with their id instead of inserting them.
DELETED_FLAG = "_deleted"
