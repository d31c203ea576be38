"""What the org's records are made of: picklists, the custom fields a new org has, and `RecordFactory`.

The history generator and the daily clock both make leads and deals here, so a record created on the
org's first day and one created by `advance()` look alike. Custom field values are drawn from the
factory's own random stream (`custom_rng`), apart from the history's and the day's: an org with or
without a custom field has the same standard values, and a field added later changes no other value.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from faker import Faker

from .model import (
    OPEN_STAGES,
    CustomField,
    Deal,
    IdSequence,
    Lead,
    Record,
    Ref,
    User,
    apply_changes,
    blank_record,
)


class Weighted:
    """A weighted picklist; `pick` costs one random() and a bisect."""

    def __init__(self, weights: dict[str | None, float]) -> None:
        self.values = list(weights)
        self.cumulative = list(itertools.accumulate(weights.values()))

    def pick(self, rng: random.Random) -> str | None:
        return self.values[bisect.bisect_right(self.cumulative, rng.random() * self.cumulative[-1])]


LEAD_SOURCES = Weighted(
    {
        "Web": 28,
        "Referral": 13,
        "Trade Show": 9,
        "Cold Call": 14,
        "Partner": 10,
        "Advertisement": 11,
        "Chat": 8,
        "Seminar": 7,
    }
)
INDUSTRIES = Weighted(
    {
        None: 25,
        "Small/Medium Enterprise": 14,
        "Large Enterprise": 8,
        "Service Provider": 9,
        "Systems Integrator": 7,
        "ERP (Enterprise Resource Planning)": 5,
        "ASP (Application Service Provider)": 5,
        "Government/Military": 3,
        "Data/Telecom OEM": 4,
        "Non-management ISV": 6,
        "Wireless Industry": 4,
        "Storage Service Provider": 3,
    }
)
RATINGS = Weighted({None: 70, "Active": 12, "Acquired": 6, "Market Failed": 4, "Project Cancelled": 5, "Shut Down": 3})
COUNTRIES = Weighted(
    {
        "United States": 38,
        "India": 14,
        "United Kingdom": 10,
        "Germany": 7,
        "Canada": 7,
        "Australia": 6,
        "France": 5,
        "Brazil": 4,
        "Singapore": 3,
        "Netherlands": 3,
        "South Africa": 2,
        None: 1,
    }
)
DESCRIPTIONS = (
    "Asked for a demo of the reporting module.",
    "Met at the booth; interested in the annual plan.",
    "Evaluating three vendors, decision next quarter.",
    "Downloaded the pricing guide twice.",
    "Current contract with a competitor ends in March.",
    "Wants an integration with their ERP.",
    "Budget approved, needs security review.",
    "Referred by an existing customer.",
)
# Statuses a lead that never converted has, by how long it has been around.
STATUS_BY_AGE = (
    (3, Weighted({"Not Contacted": 60, "Attempted to Contact": 40})),
    (14, Weighted({"Not Contacted": 15, "Attempted to Contact": 30, "Contacted": 35, "Contact in Future": 20})),
    (
        10_000,
        Weighted(
            {
                "Attempted to Contact": 12,
                "Contacted": 22,
                "Contact in Future": 14,
                "Pre-Qualified": 10,
                "Not Qualified": 16,
                "Junk Lead": 10,
                "Lost Lead": 16,
            }
        ),
    ),
)
CONVERTED_STATUS = Weighted({"Pre-Qualified": 60, "Contacted": 40})
PRODUCTS = (
    "Annual Subscription",
    "Enterprise License",
    "Onboarding Package",
    "Support Renewal",
    "Pilot",
    "Expansion",
    "Consulting Retainer",
    "Data Migration",
    "Team Plan",
    "Premium Upgrade",
)
LOSS_REASONS = Weighted(
    {"Price": 30, "Lost to Competitor": 25, "No Budget": 15, "No Decision / Non-Responsive": 20, "Timing": 10}
)
NEXT_STEPS = (
    "Send proposal",
    "Schedule demo",
    "Call with decision maker",
    "Security review",
    "Send revised quote",
    "Legal review",
    "Follow up next week",
    None,
)


# The custom fields a new sandbox org has, as an admin of a real org adds them (Setup > Modules and
# Fields): (module, API name, label, Zoho data type, picklist values).
REGIONS = ("North America", "EMEA", "APAC", "LATAM")
PRODUCT_LINES = ("Subscriptions", "Licenses", "Services")
DEFAULT_CUSTOM_FIELDS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("Leads", "Region", "Region", "picklist", REGIONS),
    ("Leads", "Product_Interest", "Product Interest", "picklist", PRODUCT_LINES),
    ("Leads", "Campaign_Code", "Campaign Code", "text", ()),
    ("Leads", "Lead_Score", "Lead Score", "integer", ()),
    ("Deals", "Region", "Region", "picklist", REGIONS),
    ("Deals", "Product_Line", "Product Line", "picklist", PRODUCT_LINES),
    ("Deals", "Competitor", "Competitor", "text", ()),
    ("Deals", "Seats", "Seats", "integer", ()),
    ("Deals", "Discount", "Discount", "percent", ()),
)
COUNTRY_REGIONS = {
    "United States": "North America",
    "Canada": "North America",
    "Brazil": "LATAM",
    "India": "APAC",
    "Australia": "APAC",
    "Singapore": "APAC",
    "United Kingdom": "EMEA",
    "Germany": "EMEA",
    "France": "EMEA",
    "Netherlands": "EMEA",
    "South Africa": "EMEA",
}
DEAL_REGIONS = Weighted({"North America": 45, "EMEA": 30, "APAC": 18, "LATAM": 7})
PRODUCT_INTEREST = Weighted({None: 20, "Subscriptions": 45, "Licenses": 20, "Services": 15})
PRODUCT_LINE_OF = {
    "Annual Subscription": "Subscriptions",
    "Team Plan": "Subscriptions",
    "Premium Upgrade": "Subscriptions",
    "Expansion": "Subscriptions",
    "Enterprise License": "Licenses",
    "Pilot": "Licenses",
    "Support Renewal": "Services",
    "Onboarding Package": "Services",
    "Consulting Retainer": "Services",
    "Data Migration": "Services",
}
COMPETITORS = Weighted({None: 55, "Salesforce": 15, "HubSpot": 12, "Pipedrive": 8, "Microsoft Dynamics": 10})


def slug(text: str) -> str:
    """`text` as a lowercase, dash-separated piece of an email address or domain."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class RecordFactory:
    """Makes new leads and deals with realistic attributes (used by the history and the daily clock)."""

    def __init__(
        self,
        faker: Faker,
        ids: IdSequence,
        users: list[User],
        inactive: tuple[str, int] | None,
        *,
        custom_fields: Mapping[str, MutableMapping[str, CustomField]],
        custom_rng: random.Random,
    ) -> None:
        self.ids = ids
        # The org's custom fields (shared with its state, which adds to them) and the stream of their values.
        self.custom_fields = custom_fields
        self.custom_rng = custom_rng
        self.first_names = [faker.first_name() for _ in range(400)]
        self.last_names = [faker.last_name() for _ in range(600)]
        self.companies = [(name, f"{slug(name)}.example.com") for name in (faker.company() for _ in range(900))]
        self.admin_id = users[0].id
        # Sales reps own most records; the inactive user owns only records from before deactivation.
        weights = {u.id: (0.15 if u.role.name == "CEO" else 0.5 if u.role.name == "Manager" else 1.0) for u in users}
        self.inactive = inactive
        self._owners_before = Weighted(weights)
        self._owners_after = Weighted({uid: w for uid, w in weights.items() if not inactive or uid != inactive[0]})
        # Existing customers that independent ("existing business") deals are sold to.
        self.customers = [
            (Ref(name, ids.next()), Ref(self._person_name(faker), ids.next())) for name, _ in self.companies[:150]
        ]

    @staticmethod
    def _person_name(faker: Faker) -> str:
        return f"{faker.first_name()} {faker.last_name()}"

    def editor(self, owner: str, when: int) -> str:
        """Who changes an owner's record at `when`: the owner, or the admin once the owner has left."""
        return self.admin_id if self.inactive and owner == self.inactive[0] and when >= self.inactive[1] else owner

    def owner(self, rng: random.Random, when: int) -> str:
        if self.inactive and when >= self.inactive[1]:
            return self._owners_after.pick(rng)
        return self._owners_before.pick(rng)

    def lead(self, rng: random.Random, when: int, source: str | None = None) -> Lead:
        first, last = rng.choice(self.first_names), rng.choice(self.last_names)
        company, domain = rng.choice(self.companies)
        owner = self.owner(rng, when)
        creator = owner if rng.random() < 0.7 else self.admin_id  # web forms and imports run as the admin
        lead = blank_record("Leads", self.ids.next(), when, creator)
        apply_changes(
            lead,
            {
                "Owner": owner,
                "First_Name": first,
                "Last_Name": last,
                "Company": company,
                "Email": None if rng.random() < 0.04 else f"{slug(first)}.{slug(last)}@{domain}",
                "Phone": None if rng.random() < 0.1 else f"+1 {rng.randrange(201, 990)}-555-01{rng.randrange(100):02d}",
                "Lead_Source": source or LEAD_SOURCES.pick(rng),
                "Lead_Status": "Not Contacted",
                "Industry": INDUSTRIES.pick(rng),
                "Annual_Revenue": None if rng.random() < 0.5 else round(rng.lognormvariate(math.log(2e6), 1.2), -3),
                "No_of_Employees": None if rng.random() < 0.5 else int(rng.lognormvariate(math.log(80), 1.3)) + 1,
                "Rating": RATINGS.pick(rng),
                "Country": COUNTRIES.pick(rng),
                "Description": None if rng.random() < 0.85 else rng.choice(DESCRIPTIONS),
            },
        )
        return self.with_custom_values("Leads", lead)

    def deal(
        self,
        rng: random.Random,
        when: int,
        *,
        owner: str,
        account: Ref,
        contact: Ref | None,
        source: str | None,
        deal_type: str,
    ) -> Deal:
        deal = blank_record("Deals", self.ids.next(), when, owner)
        apply_changes(
            deal,
            {
                "Deal_Name": f"{account.name} - {rng.choice(PRODUCTS)}",
                "Account_Name": account,
                "Contact_Name": contact,
                "Amount": self.amount(rng),
                "Stage": OPEN_STAGES[0].actual_value,
                "Lead_Source": source,
                "Type": deal_type,
                "Next_Step": rng.choice(NEXT_STEPS),
            },
        )
        return self.with_custom_values("Deals", deal)

    def existing_business_deal(self, rng: random.Random, when: int) -> Deal:
        account, contact = rng.choice(self.customers)
        new_logo = rng.random() < 0.4
        return self.deal(
            rng,
            when,
            owner=self.owner(rng, when),
            account=account,
            contact=contact,
            source=LEAD_SOURCES.pick(rng) if new_logo else None,
            deal_type="New Business" if new_logo else "Existing Business",
        )

    @staticmethod
    def amount(rng: random.Random) -> int | None:
        """Deal sizes are roughly lognormal (median ~12k), rounded to 50; a few deals have no amount yet."""
        if rng.random() < 0.05:
            return None
        return max(500, round(rng.lognormvariate(math.log(12_000), 0.9) / 50) * 50)

    # -- custom fields ------------------------------------------------------------------------

    def with_custom_values(self, module: str, record: Record) -> Record:
        """`record` with a value for each custom field the org has (some left empty, as people leave them)."""
        apply_changes(
            record,
            {field.api_name: self.custom_value(module, field, record) for field in self.custom_fields[module].values()},
        )
        return record

    def custom_value(self, module: str, field: CustomField, record: Record) -> Any:
        """A value of `field` for `record`: the org's own custom fields follow the record (a lead's region is
        its country's, a deal's product line its product's); a field added later gets plausible values of
        its type."""
        rng = self.custom_rng
        default = (module, field.api_name, field.data_type)
        if default == ("Leads", "Region", "picklist"):
            return COUNTRY_REGIONS.get(record.Country or "")  # type: ignore[union-attr]
        if default == ("Leads", "Product_Interest", "picklist"):
            return PRODUCT_INTEREST.pick(rng)
        if default == ("Leads", "Campaign_Code", "text"):
            source = record.Lead_Source or "Web"  # type: ignore[union-attr]
            return None if rng.random() < 0.5 else f"{slug(source)[:3].upper()}-{rng.randrange(100, 1000)}"
        if default == ("Leads", "Lead_Score", "integer"):
            return rng.randrange(0, 101)
        if default == ("Deals", "Region", "picklist"):
            return DEAL_REGIONS.pick(rng)
        if default == ("Deals", "Product_Line", "picklist"):
            return PRODUCT_LINE_OF.get((record.Deal_Name or "").rsplit(" - ", 1)[-1])  # type: ignore[union-attr]
        if default == ("Deals", "Competitor", "text"):
            return COMPETITORS.pick(rng)
        if default == ("Deals", "Seats", "integer"):
            return int(rng.lognormvariate(math.log(20), 0.9)) + 1
        if default == ("Deals", "Discount", "percent"):
            return 0 if rng.random() < 0.6 else round(rng.uniform(2, 25), 1)
        return _any_value(field, rng)


def _any_value(field: CustomField, rng: random.Random) -> Any:
    """A plausible value of a field the sandbox knows nothing about but its type (one in ten left empty)."""
    if rng.random() < 0.1:
        return None
    if field.data_type == "picklist":
        return rng.choice(field.values) if field.values else None
    if field.data_type in ("text", "textarea", "email", "phone", "website"):
        return f"{field.label} {rng.randrange(1, 1000)}"
    if field.data_type == "integer":
        return rng.randrange(1, 1000)
    if field.data_type in ("double", "currency", "percent"):
        return round(rng.uniform(0, 100), 2)
    if field.data_type == "boolean":
        return rng.random() < 0.5
    return None  # dates: left for people to fill in
