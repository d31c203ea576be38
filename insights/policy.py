"""What each fact calls for: whether it needs attention, and which next steps fit it.

These are editorial rules, decided in code for every briefing whoever words it.
The model works inside them (the answer schema offers only what they allow, see
`insights.prompt`), and `insights.review` enforces them again on whatever came back:

- a fact that *needs attention* (overdue or stale deals, losses, a drop in the
  open pipeline, anything the facts flag as a warning; in an owner's digest, the
  owner's deals that need attention and their losses) may only be listed under
  "Needs attention", and every such fact is listed there, chosen by the model
  or not: a sales leader must never miss one because a small model left it out;
- every other fact may be the headline or a highlight, never a risk;
- an action may be paired only with a fact that calls for it: sharing the wins
  needs a win, chasing a move of the pipeline needs a move worth a warning.

An owner's digest (`insights.owner_facts`, ids `my_*`) has its own actions, worded
for the owner rather than for a manager, and each fits only when a flagged deal
gives it a reason: updating overdue deals needs an overdue deal, confirming the
next step needs a quiet one, checking what slipped needs a push, a cut or a step back.
"""

from __future__ import annotations

from collections.abc import Callable

from insights.facts import DayFacts, Fact, half_up

# The next steps the model may suggest; the sentences are ours, the model only picks.
ACTIONS: dict[str, str] = {
    "chase_overdue_deals": "Ask owners to update or close the overdue deals",
    "review_closing_deals": "Review the deals due to close soon",
    "clean_up_stale_deals": "Clean up deals without recent updates",
    "follow_up_new_leads": "Make sure the new leads get a first call",
    "review_lost_deals": "Go over why deals were lost",
    "share_wins": "Share the wins with the team",
    "investigate_pipeline_change": "Find out what moved the pipeline",
    "review_win_rate": "Look at what is holding back the win rate",
    "fix_crm_records": "Ask owners to fix the CRM records with impossible values",
    "review_deals_with_owners": "Go through the deals needing attention with their owners",
    # An owner's digest.
    "update_overdue_deals": "Update or close the overdue deals",
    "confirm_quiet_deals": "Confirm the next step on the quiet deals",
    "check_slipping_deals": "Check what changed on the deals that slipped",
}

# Which actions a fact calls for, given its values (the first is what the standard briefing suggests);
# a fact absent here calls for no action.
_ACTIONS_FOR: dict[str, Callable[[Fact], tuple[str, ...]]] = {
    "overdue_deals": lambda f: ("chase_overdue_deals",),
    "closing_soon": lambda f: ("review_closing_deals",),
    "stale_deals": lambda f: ("clean_up_stale_deals",),
    "new_leads": lambda f: ("follow_up_new_leads",) if f.values.get("count") else (),
    "deals_lost": lambda f: ("review_lost_deals",) if f.values.get("count") else (),
    "top_deal_lost": lambda f: ("review_lost_deals",),
    "deals_won": lambda f: ("share_wins",) if f.values.get("count") else (),
    "top_deal_won": lambda f: ("share_wins",),
    "pipeline_change_1d": lambda f: ("investigate_pipeline_change",) if _dropped(f) else (),
    "pipeline_change_7d": lambda f: ("investigate_pipeline_change",) if _dropped(f) else (),
    "win_rate": lambda f: ("review_win_rate",) if f.severity == "warn" else (),
    "data_quality": lambda f: ("fix_crm_records",),
    "top_at_risk": lambda f: ("review_deals_with_owners",),
    "owners_at_risk": lambda f: ("review_deals_with_owners",),
    # An owner's digest.
    "my_at_risk": lambda f: _owner_risk_actions(f),
    "my_due_soon": lambda f: ("review_closing_deals",),
    "my_won": lambda f: ("share_wins",),
    "my_lost": lambda f: ("review_lost_deals",) if f.values.get("count") else (),
}

# The owner's action for each rule of insights.deal_flags that fired on at least one of their deals.
_RULE_ACTIONS = (
    ("overdue", "update_overdue_deals"),
    ("quiet", "confirm_quiet_deals"),
    ("pushed", "check_slipping_deals"),
    ("shrunk", "check_slipping_deals"),
    ("moved_back", "check_slipping_deals"),
)


def _owner_risk_actions(fact: Fact) -> tuple[str, ...]:
    """The actions the owner's flagged deals call for, in the order of the rules (overdue first)."""
    fired = fact.values.get("rules", {})
    return tuple(dict.fromkeys(action for rule, action in _RULE_ACTIONS if fired.get(rule)))


def _dropped(fact: Fact) -> bool:
    """The open pipeline went down by at least one unit of what the message shows (not a rounding blip)."""
    change = fact.values.get("change")
    return change is not None and change < 0 and half_up(-change) > 0


# Facts that need attention whatever their size; any fact flagged "warn" needs it too.
_ATTENTION: dict[str, Callable[[Fact], bool]] = {
    "overdue_deals": lambda f: True,
    "stale_deals": lambda f: True,
    "deals_lost": lambda f: bool(f.values.get("count")),
    "top_deal_lost": lambda f: True,
    "pipeline_change_1d": _dropped,
    "pipeline_change_7d": _dropped,
    "top_at_risk": lambda f: True,
    "my_at_risk": lambda f: True,
    "my_lost": lambda f: bool(f.values.get("count")),
}


def actions_for(fact: Fact) -> tuple[str, ...]:
    """The action ids that fit `fact` (possibly none)."""
    rule = _ACTIONS_FOR.get(fact.id)
    return rule(fact) if rule else ()


def needs_attention(fact: Fact) -> bool:
    """Whether `fact` belongs under "Needs attention" (and only there)."""
    rule = _ATTENTION.get(fact.id)
    return fact.severity == "warn" or (rule is not None and rule(fact))


def attention_ids(day: DayFacts) -> list[str]:
    """The facts of the day that need attention, most important first: all of them reach the message."""
    return [f.id for f in day.facts if needs_attention(f)]


def other_ids(day: DayFacts) -> list[str]:
    """The facts that may be the headline or a highlight, most important first."""
    return [f.id for f in day.facts if not needs_attention(f)]
