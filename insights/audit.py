"""The last gate before sending: every number in the message must be one the facts contain.

Two checks, because the message has two authors:
- the code-formatted fact sentences: numbers are extracted with one regex from
  the message (with names masked, see `insights.compose`) and from the facts'
  sentences, normalised the same way (thousands separators dropped, a leading
  `+` ignored), and the message's must be a subset of the facts';
- the model's comments, on their own: they may carry no number at all, in any
  script or as a word (`insights.text.quantity_problem`). A figure that happens
  to equal some fact's number elsewhere would otherwise pass the first check.
A message that fails is never sent: the deterministic briefing is sent instead
and the reason recorded.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from insights.compose import MAX_LENGTH, Message, whatsapp_length
from insights.facts import DayFacts, fmt_date
from insights.text import quantity_problem

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


def _odd_figure(text: str) -> str | None:
    """A numeral the regex cannot read (superscripts, fractions, other scripts): the facts never use one."""
    return next(
        (
            ch
            for ch in text
            if not ch.isascii() and (unicodedata.category(ch)[0] == "N" or unicodedata.numeric(ch, None) is not None)
        ),
        None,
    )


def audit(message: Message, day: DayFacts) -> Verdict:
    found = numbers(message.masked)
    allowed = allowed_numbers(day)
    strangers = sorted({n for n in found if n not in allowed})
    if strangers:
        return Verdict(False, len(found), f"numbers not among the facts: {', '.join(strangers[:10])}")
    odd = _odd_figure(message.masked)
    if odd:
        return Verdict(False, len(found), f"a numeral the facts do not use: {odd!r}")
    for comment in message.comments:
        problem = quantity_problem(comment)
        if problem:
            return Verdict(False, len(found), f"a comment states a quantity or a link ({problem}): {comment[:60]!r}")
    if whatsapp_length(message.text) > MAX_LENGTH:
        return Verdict(False, len(found), f"the message is longer than {MAX_LENGTH} characters")
    return Verdict(True, len(found))
