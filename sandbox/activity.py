"""The org's clock: one simulated day of sales activity.

`simulate_day` moves the org to the next day and plays that day: new leads and deals, lead
conversions (most create a deal), stage moves (some deals close, won or lost), edits of amounts,
owners and statuses, edits of custom fields (a deal moves to another product line, a lead gets a score),
and a few deletions. Volumes scale with the size the org was generated with
(5,000 leads / 2,000 deals give ~40 new leads, ~15 new deals, a few dozen updates and a few
deletions per module on a weekday; weekends are quieter).

Every event gets a timestamp inside the new day (office hours), strictly after everything the org
issued before, and events are applied in time order. The day's randomness comes from
`Random(f"{seed}:{date}")`, so the outcome depends only on the seed, the date and the org's state:
two orgs with the same seed and `today`, advanced the same number of days, stay identical. The custom
field edits draw from a stream of their own, so an org's standard fields live the same day with or
without its custom fields.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

from .factory import LOSS_REASONS, NEXT_STEPS, RecordFactory
from .model import OPEN_STAGES, STAGE_BY_NAME, STAGES, Deal, Lead, Record, field_value
from .state import OrgState
from .timeline import DAY

T = TypeVar("T")
DAY_SECONDS = 86_400
RECENT_LEAD_DAYS = 60  # leads older than this rarely convert any more
CLOSED_STAGES = frozenset(s.actual_value for s in STAGES if not s.is_open)
DEAD_STATUSES = frozenset({"Junk Lead", "Lost Lead", "Not Qualified"})
NEXT_STATUS = {
    "Not Contacted": ("Attempted to Contact", "Contacted"),
    "Attempted to Contact": ("Contacted", "Contact in Future", "Not Qualified"),
    "Contacted": ("Pre-Qualified", "Contact in Future", "Not Qualified", "Lost Lead"),
    "Contact in Future": ("Contacted", "Lost Lead"),
    "Pre-Qualified": ("Contacted", "Lost Lead"),
}


def simulate_day(state: OrgState) -> dict[str, dict[str, int]]:
    """Advance the org by one day; returns what changed per module (created, updated, deleted)."""
    state.today += DAY
    day = _Day(state, random.Random(f"sandbox-day:{state.seed}:{state.today.isoformat()}"))
    day.plan()
    day.plan_custom_edits(random.Random(f"sandbox-day-custom:{state.seed}:{state.today.isoformat()}"))
    day.run()
    return day.report()


class _Day:
    def __init__(self, state: OrgState, rng: random.Random) -> None:
        self.state = state
        self.rng = rng
        self.factory: RecordFactory = state.factory
        self.activity = state.calendar.activity(state.today)
        self.actions: list[tuple[int, int, Callable[[int], None]]] = []
        self.created: Counter[str] = Counter()
        self.deleted: Counter[str] = Counter()
        self.updated: dict[str, set[str]] = {module: set() for module in state.tables}

    def volume(self, per_weekday: float) -> int:
        return _poisson(self.rng, per_weekday * self.activity)

    def sample(self, population: Sequence[T], per_weekday: float) -> list[T]:
        return self.rng.sample(population, min(len(population), self.volume(per_weekday)))

    def schedule(self, action: Callable[[int], None]) -> None:
        ts = self.state.calendar.business_second(self.state.today, self.rng)
        self.actions.append((ts, len(self.actions), action))

    def plan(self) -> None:
        """Pick today's targets from the records as they were at the start of the day."""
        state, size = self.state, self.state.size
        leads: list[Lead] = list(state.tables["Leads"].values())  # type: ignore[arg-type]
        deals: list[Deal] = list(state.tables["Deals"].values())  # type: ignore[arg-type]
        doomed_leads = self.sample(leads, size.leads / 1500)
        doomed_deals = self.sample(deals, size.deals / 700)
        doomed = {r.id for r in doomed_leads} | {r.id for r in doomed_deals}

        recent = state.now - RECENT_LEAD_DAYS * DAY_SECONDS
        open_leads = [lead for lead in leads if not lead.Converted__s and lead.id not in doomed]
        converting = self.sample(
            [lead for lead in open_leads if lead.Created_Time >= recent and lead.Lead_Status not in DEAD_STATUSES],
            size.leads / 120 * 0.2,
        )
        busy = {lead.id for lead in converting}
        edited_leads = self.sample([lead for lead in open_leads if lead.id not in busy], size.leads / 150)

        open_deals = [d for d in deals if STAGE_BY_NAME[d.Stage].is_open and d.id not in doomed]
        moving = self.sample(open_deals, len(open_deals) / 25)
        busy = {d.id for d in moving}
        edited_deals = self.sample([d for d in open_deals if d.id not in busy], size.deals / 150)

        for _ in range(self.volume(size.leads / 120)):
            self.schedule(self.new_lead)
        for _ in range(self.volume(size.deals / 250)):
            self.schedule(self.new_deal)
        for lead in converting:
            self.schedule(partial(self.convert, lead))
        for lead in edited_leads:
            self.schedule(partial(self.edit_lead, lead))
        for deal in moving:
            self.schedule(partial(self.move_deal, deal))
        for deal in edited_deals:
            self.schedule(partial(self.edit_deal, deal))
        for module, doomed_records in (("Leads", doomed_leads), ("Deals", doomed_deals)):
            for record in doomed_records:
                self.schedule(partial(self.delete, module, record))

    def plan_custom_edits(self, rng: random.Random) -> None:
        """Edits of one custom field each, on open deals and unconverted leads (scheduled after the rest of
        the day's plan, from their own stream)."""
        state, size = self.state, self.state.size
        for module, per_weekday in (("Leads", size.leads / 1000), ("Deals", size.deals / 400)):
            fields = list(state.custom_fields[module].values())
            candidates = [
                r
                for r in state.tables[module].values()
                if (r.Stage not in CLOSED_STAGES if isinstance(r, Deal) else not r.Converted__s)
            ]
            if not fields or not candidates:
                continue
            count = min(len(candidates), _poisson(rng, per_weekday * self.activity))
            for record in rng.sample(candidates, count):
                ts = state.calendar.business_second(state.today, rng)
                field = rng.choice(fields)
                self.actions.append((ts, len(self.actions), partial(self.edit_custom, module, record, field.api_name)))

    def run(self) -> None:
        for ts, _, action in sorted(self.actions, key=lambda a: (a[0], a[1])):
            action(self.state.stamp(ts))

    def report(self) -> dict[str, dict[str, int]]:
        return {
            module: {
                "created": self.created[module],
                "updated": len(self.updated[module]),
                "deleted": self.deleted[module],
            }
            for module in self.state.tables
        }

    # -- actions; each receives its timestamp -------------------------------------------------

    def new_lead(self, when: int) -> None:
        self.state.add("Leads", self.factory.lead(self.rng, when))
        self.created["Leads"] += 1

    def new_deal(self, when: int) -> None:
        self.state.add("Deals", self.factory.existing_business_deal(self.rng, when))
        self.created["Deals"] += 1

    def convert(self, lead: Lead, when: int) -> None:
        with_deal = self.state.size.deals > 0 and self.rng.random() < 0.8
        if self.state.convert(lead, when, self.rng, with_deal=with_deal) is not None:
            self.created["Deals"] += 1
        self.updated["Leads"].add(lead.id)

    def edit_lead(self, lead: Lead, when: int) -> None:
        rng, roll = self.rng, self.rng.random()
        if roll < 0.7:
            changes = {"Lead_Status": rng.choice(NEXT_STATUS.get(lead.Lead_Status or "", ("Contacted",)))}
        elif roll < 0.85:
            changes = {"Owner": self.factory.owner(rng, when)}
        else:
            changes = {
                "Phone": f"+1 {rng.randrange(201, 990)}-555-01{rng.randrange(100):02d}",
                "Rating": rng.choice(("Active", "Acquired", "Project Cancelled")),
            }
        self._change("Leads", lead, changes, when)

    def move_deal(self, deal: Deal, when: int) -> None:
        """Later stages close more often; a deal in the last open stage always closes."""
        rng, stage = self.rng, STAGE_BY_NAME[deal.Stage]
        last_open = OPEN_STAGES[-1].sequence_number
        if stage.sequence_number == last_open or rng.random() < 0.1 + 0.12 * stage.sequence_number:
            won = rng.random() < 0.3 + 0.05 * stage.sequence_number
            changes = (
                {"Stage": "Closed Won", "Next_Step": None}
                if won
                else {
                    "Stage": "Closed Lost" if rng.random() < 0.75 else "Closed Lost to Competition",
                    "Reason_For_Loss__s": LOSS_REASONS.pick(rng),
                    "Next_Step": None,
                }
            )
        else:
            step = 2 if rng.random() < 0.2 else 1
            target = OPEN_STAGES[min(last_open, stage.sequence_number + step) - 1]
            changes = {"Stage": target.actual_value, "Next_Step": rng.choice(NEXT_STEPS)}
        self._change("Deals", deal, changes, when)

    def edit_deal(self, deal: Deal, when: int) -> None:
        rng, roll = self.rng, self.rng.random()
        if roll < 0.5:
            amount = (
                self.factory.amount(rng)
                if deal.Amount is None
                else max(500, round(deal.Amount * rng.uniform(0.8, 1.25) / 50) * 50)
            )
            changes = {"Amount": amount}
        elif roll < 0.65:
            changes = {"Owner": self.factory.owner(rng, when)}
        else:
            closing = max(deal.Closing_Date or self.state.today, self.state.today)
            changes = {"Closing_Date": closing + DAY * rng.randint(7, 30), "Next_Step": rng.choice(NEXT_STEPS)}
        self._change("Deals", deal, changes, when)

    def edit_custom(self, module: str, record: Record, api_name: str, when: int) -> None:
        """Set another value of a custom field, unless the record or the field is gone by now."""
        field = self.state.custom_fields[module].get(api_name)
        if field is None or record.id not in self.state.tables[module]:
            return
        value = self.factory.custom_value(module, field, record)
        if value != field_value(record, api_name):
            self._change(module, record, {api_name: value}, when)

    def delete(self, module: str, record: Record, when: int) -> None:
        self.state.remove(module, record.id, when, self.factory.editor(record.Owner, when))
        self.deleted[module] += 1

    def _change(self, module: str, record: Record, changes: dict, when: int) -> None:
        self.state.change(module, record, changes, when, self.factory.editor(record.Owner, when))
        self.updated[module].add(record.id)


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth) for small means, its normal approximation for large ones."""
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
