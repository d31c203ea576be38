"""The last gate before sending: every number in the message must be one the facts contain.

Numbers are extracted with one regex from the message (with names masked, see
`insights.compose`) and from the facts' code-formatted sentences, normalised
the same way (thousands separators dropped, a leading `+` ignored), and the
message's must be a subset of the facts'. A message that fails is never sent:
the deterministic briefing is sent instead and the reason recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from insights.compose import MAX_LENGTH, Message, whatsapp_length
from insights.facts import DayFacts, fmt_date
from insights.prompt import NUMBER_WORDS

NUMBER = re.compile(r"[-+\u2212]?\d+(?:[.,]\d+)*(?:%|[KMB](?![A-Za-z0-9]))?")


def normalise(token: str) -> str:
    """'+1,234.5K' and '1234.5K' are the same figure; a minus sign is kept."""
    return token.replace("\u2212", "-").lstrip("+").replace(",", "")


def numbers(text: str) -> list[str]:
    return [normalise(m) for m in NUMBER.findall(text)]


def allowed_numbers(day: DayFacts) -> set[str]:
    """Every number the facts state (in the sentences the prompt showed) plus the report date."""
    allowed = set(numbers(fmt_date(day.report_date)))
    for fact in day.facts:
        allowed.update(numbers(fact.prompt_text()))
    return allowed


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    problem: str | None = None


def audit(message: Message, day: DayFacts) -> Verdict:
    found = numbers(message.masked)
    allowed = allowed_numbers(day)
    strangers = sorted({n for n in found if n not in allowed})
    if strangers:
        return Verdict(False, len(found), f"numbers not among the facts: {', '.join(strangers[:10])}")
    word = NUMBER_WORDS.search(message.masked)
    if word:
        return Verdict(False, len(found), f"a quantity in words: {word.group(0)!r}")
    if whatsapp_length(message.text) > MAX_LENGTH:
        return Verdict(False, len(found), f"the message is longer than {MAX_LENGTH} characters")
    return Verdict(True, len(found))
