"""The WhatsApp message: the chosen facts, their sentences, names put back, at most two messages long.

Everything numeric is a fact's code-formatted sentence; the model contributes
only which facts appear and short digit-free comments. CRM names come back here,
and only here, sanitised so a name cannot restyle the message (WhatsApp's
`*_~` markup), break lines, carry a link or run on. The message is rendered a
second time with every name masked, which is what `insights.audit` checks: a
deal called "Acme 500 seats" must not fail the audit, and must not let an
invented figure slip through either.

`fallback_plan` is the deterministic briefing used whenever the model's answer
is missing or rejected: every fact, by priority, every fact that needs
attention listed under "Needs attention" as in a model's briefing.

`template_variables` is the same briefing for WhatsApp's approved template
(outside the 24-hour window): the headline and what needs attention, each
variable one line, the whole within the template's 1,024 characters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from insights.facts import DayFacts, EntityRef, fmt_date
from insights.policy import ACTIONS, actions_for, needs_attention
from insights.prompt import MAX_ACTIONS, Pick, Plan, Step
from insights.text import LINK, plain_text

# The longest briefing, in UTF-16 code units: two WhatsApp messages of 1,600 (it goes in numbered parts).
MAX_LENGTH = 3200
NAME_MAX = 40
TEMPLATE_MAX = 1024  # WhatsApp's limit for a template's body once its variables are filled
TEMPLATE_VARIABLE_MAX = 400
MASK = "NAME"
BULLET = "\u2022"


def _without_links(text: str) -> str:
    """Drop everything WhatsApp would make clickable, until nothing is left to drop (removing one link
    must not join the pieces around it into another)."""
    while True:
        stripped = " ".join(LINK.sub(" ", text).split())
        if stripped == text:
            return text
        text = stripped


def sanitize_name(raw: str | None, limit: int = NAME_MAX) -> str:
    """A CRM name made safe to show inline: no markup, no line breaks, no links, at most `limit` characters."""
    name = _without_links(plain_text(raw or ""))
    if len(name) > limit:  # and again after the cut, which can turn "evil.co0" into a domain
        name = _without_links(_cut_at_word(name, limit - 1) + "\u2026")
    return name or "(unnamed)"


def _cut_at_word(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters between two words ("Enterprise Li…" read as a typo), unless the
    first word alone is longer."""
    cut = text[: limit + 1]
    if " " in cut.strip():
        cut = cut[: cut.rstrip().rindex(" ")]
    return cut[:limit].rstrip(" ,;:-")


def sanitize_comment(raw: str) -> str:
    """A comment as shown: the reviewed text (see `insights.text.plain_text`), capitalised, no final stop."""
    comment = plain_text(raw).rstrip(".")
    return comment[:1].upper() + comment[1:]


def whatsapp_length(text: str) -> int:
    """Length as Twilio counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Message:
    text: str  # what is sent
    masked: str  # the same message with every name replaced by NAME: what the audit checks
    comments: tuple[str, ...] = ()  # the model's remarks as shown: the audit wants no number in them at all


def fallback_plan(day: DayFacts) -> Plan:
    """The deterministic briefing: the top fact that needs no attention as the headline, every other one as
    a highlight (`compose` trims the least important if the message grows past two parts), and every fact
    that needs attention. The currency fact is left to the footer, which always names the currency."""
    others = [f for f in day.facts if not needs_attention(f) and (f.id != "currency" or f is day.facts[0])]
    risks = [f for f in day.facts if needs_attention(f)]
    headline, highlights = others[0], others[1:]
    actions: list[Step] = []
    for fact in [headline, *risks, *highlights]:
        action = next(iter(actions_for(fact)), None)
        if action and action not in {s.action for s in actions} and len(actions) < MAX_ACTIONS:
            actions.append(Step(fact.id, action))
    return Plan(
        headline=Pick(headline.id),
        highlights=tuple(Pick(f.id) for f in highlights),
        risks=tuple(Pick(f.id) for f in risks),
        actions=tuple(actions),
    )


def compose(
    day: DayFacts, plan: Plan, names: Mapping[tuple[str, str], str], footer: str, title: str = "Sales briefing"
) -> Message:
    """Render the plan as a WhatsApp message within MAX_LENGTH, trimming the least important lines first."""
    heading = title
    shown: set[str] = {plan.headline.fact_id}

    def fresh(picks: tuple[Pick, ...]) -> list[Pick]:
        kept = []
        for pick in picks:
            if pick.fact_id not in shown:
                shown.add(pick.fact_id)
                kept.append(pick)
        return kept

    highlights, risks = fresh(plan.highlights), fresh(plan.risks)
    actions = list(dict((s.action, s) for s in plan.actions).values())
    with_comments = True
    # Every amount is in the org's home currency: say which, whether or not the model chose that fact.
    code = next((f.values.get("currency") for f in day.facts if f.id == "currency"), None)
    currency = f" Amounts in {code}." if code else ""

    def render(name_of: Callable[[EntityRef], str]) -> str:
        def bullet(pick: Pick) -> str:
            line = f"{BULLET} {day.get(pick.fact_id).render(name_of)}"
            comment = sanitize_comment(pick.comment) if with_comments else ""
            return f"{line}\n   _{comment}_" if comment else line

        headline = day.get(plan.headline.fact_id)
        lines = [f"*{heading} \u00b7 {fmt_date(day.report_date)}*", "", f"*{headline.render(name_of)}*"]
        comment = sanitize_comment(plan.headline.comment) if with_comments else ""
        if comment:
            lines.append(f"_{comment}_")
        for title, picks in (("Highlights", highlights), ("Needs attention", risks)):
            if picks:
                lines += ["", f"*{title}*", *(bullet(p) for p in picks)]
        if actions:
            lines += ["", "*Next steps*"]
            for step in actions:
                comment = sanitize_comment(step.comment) if with_comments else ""
                line = f"{BULLET} {ACTIONS[step.action]}."
                lines.append(f"{line} _{comment}_" if comment else line)
        lines += ["", f"_{footer}{currency}_"]
        return "\n".join(lines)

    def named(ref: EntityRef) -> str:
        return sanitize_name(names.get((ref.kind, ref.id)))

    text = render(named)
    # Trim: next steps, then highlights (least important last), then comments; the facts that need
    # attention go last of all, and only if a message of them alone would not fit.
    while whatsapp_length(text) > MAX_LENGTH:
        if actions:
            actions.pop()
        elif len(highlights) > 1:
            highlights.pop()
        elif with_comments:
            with_comments = False
        elif highlights:
            highlights.pop()
        elif risks:
            risks.pop()
        else:
            break
        text = render(named)
    shown = [plan.headline, *highlights, *risks, *actions] if with_comments else []
    comments = tuple(c for c in (sanitize_comment(p.comment) for p in shown) if c)
    return Message(text=text, masked=render(lambda ref: MASK), comments=comments)


def template_variables(
    day: DayFacts, plan: Plan, names: Mapping[tuple[str, str], str], what: str = "the sales briefing"
) -> tuple[dict[str, str], dict[str, str]]:
    """The template's variables for this briefing, and the same with names masked (what the audit checks).

    {{1}} says what it is and for which day, {{2}} is the headline, {{3}} what needs attention: the lead
    clause of each such fact that carries a figure (its count and amount, before the list of deals), most
    important first, as many as fit, "and more in the full briefing" when not every such fact is there,
    "nothing today" only when there is none. Each variable is a single line with no run of spaces, as WhatsApp requires.
    """
    from insights.whatsapp import TEMPLATE_BODY, fill_template

    risks = [day.get(p.fact_id) for p in plan.risks if p.fact_id != plan.headline.fact_id]

    def variables(name_of: Callable[[EntityRef], str]) -> dict[str, str]:
        headline = _one_line(day.get(plan.headline.fact_id).render(name_of))
        if whatsapp_length(headline) > TEMPLATE_VARIABLE_MAX:
            headline = _cut_at_word(headline, TEMPLATE_VARIABLE_MAX - 1) + "\u2026"
        shown = {"1": f"{what} for {fmt_date(day.report_date)}", "2": headline, "3": "nothing today."}
        # A lead clause without a figure ("Biggest loss of the day") says nothing before its list: left to the
        # full briefing, like the clauses that do not fit.
        clauses = [
            c
            for c in (_lead_clause(_one_line(fact.render(name_of))) for fact in risks)
            if any(ch.isdigit() for ch in c)
        ]
        for keep in range(len(clauses), -1, -1):
            said = "; ".join(clauses[:keep]) + "." if keep else "too much to list here."
            shown["3"] = said + (" And more in the full briefing." if keep < len(risks) else "")
            if (
                whatsapp_length(shown["3"]) <= TEMPLATE_VARIABLE_MAX
                and whatsapp_length(fill_template(TEMPLATE_BODY, shown)) <= TEMPLATE_MAX
            ):
                break
        return shown

    return variables(lambda ref: sanitize_name(names.get((ref.kind, ref.id)))), variables(lambda ref: MASK)


def _lead_clause(sentence: str) -> str:
    """A fact's sentence up to its first colon or semicolon, without the final stop: what it says before
    the deals it lists ("46 open deals of yours worth 769K need attention")."""
    cut = min((i for i in (sentence.find(": "), sentence.find("; ")) if i > 0), default=len(sentence))
    return sentence[:cut].rstrip(" .")


def _one_line(text: str) -> str:
    """One line, no tab, no run of spaces: what WhatsApp accepts in a template variable."""
    return " ".join(text.split())
