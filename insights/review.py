"""What the model may not decide, enforced on every answer whatever it said.

The grammar guarantees an answer's shape; it cannot judge its content. Before a
plan becomes a message it is settled here:

- every fact that needs attention (`insights.policy`) is listed under "Needs
  attention", in order of importance, whether the model chose it or not;
- a fact appears once: a repeat of the headline or of an earlier line is dropped;
- a comment is kept only if it adds something a reader can use. It is dropped,
  and the rest of the answer kept, when it is empty, too long or not plain words,
  states a quantity (a figure, a number word such as "one" or "doubled", a
  numeral) or carries a link, is unfinished ("Deal won by owner:"), is generic
  ("Worth a look today"), only repeats its fact or step, shares no word with its
  fact or step ("Sellable, but the winner is not available to share" under the
  stale deals), states a direction the fact contradicts ("The lead trend is up"
  when leads fell), talks about another fact's subject ("The top seller is the
  largest stage" under the stage fact), or is the same remark the model put on
  several facts.

Each dropped comment is recorded with its reason, so `ai_summaries` and
`make eval` can tell how much the model's words were worth.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from insights.facts import DayFacts, Fact, half_up
from insights.policy import ACTIONS, attention_ids, needs_attention
from insights.prompt import COMMENT_MAX, MAX_ACTIONS, Pick, Plan, Step, comment_pattern
from insights.text import plain_text, quantity_problem

_WORD = re.compile(r"[a-z]+")

_STOPWORDS = frozenset(
    "a about above after again all also am an and any are as at be been before being below between both but by can "
    "could did do does doing down during each for from further had has have having he her here hers him his how i if "
    "in into is it its itself just me more most my no nor not now of off on once only or other our ours out over own "
    "same she should so some such than that the their them then there these they this those through to too under "
    "until up very was we were what when where which while who whom why will with would you your yours".split()
)
# Words that fit any fact, so a comment made only of them (and stop words) says nothing.
_GENERIC = frozenset(
    "worth look looking today day daily good great nice news important importance note notable noteworthy key keep "
    "eye watch watching attention check checking interesting significant big positive negative fact facts item items "
    "update updates highlight highlights briefing summary remark comment matter matters focus consider considering "
    "strong solid well done excellent work team overall thing things everything fine ok okay job wow cool awesome "
    "congratulations congrats vital crucial critical relevant useful helpful noted nothing something mention "
    "mentioning remember reminder please see data figure figures number numbers value values trend trends example "
    "examples business company use using used way ways help helps information insight insights how show shows".split()
)


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


_GENERIC_STEMS = frozenset(_stem(w) for w in _GENERIC)
# Words a finished remark does not end on ("a deal worth", "the owner of").
_DANGLING = frozenset(
    "a an the of to for and or but nor by with in on at from into onto as than worth like per via versus vs "
    "is are was were be been being has have had do does did will would should could can may might must "
    "my our your their its his her whose which who whom that if because while when where".split()
)


# Words that claim a direction. "up" and "down" also end phrasal verbs ("follow up", "narrow down"), which
# claim nothing, so those two count only when the word before them is not such a verb.
_RISING = frozenset(
    "up rising rise rises rose risen growing grow grows grew grown increase increases increased increasing higher "
    "climbing climb climbs climbed gaining gain gains gained jump jumps jumped surge surges surged upward upwards "
    "improving improve improves improved".split()
)
_FALLING = frozenset(
    "down falling fall falls fell fallen shrinking shrink shrinks shrank shrunk decrease decreases decreased "
    "decreasing lower declining decline declines declined dropping dropped dip dips dipped slipping slipped "
    "sliding slid downward downwards worsening worsened".split()
)
_PHRASAL = frozenset(
    "follow following followed clean cleaning pick set catch wrap back step sign line look pin track write "
    "narrow break close shut sit wind settle speed free open check sum call".split()
)


def _directions(text: str) -> list[tuple[str, int]]:
    """The words of `text` that claim a direction, in order, each with its sign (1 a rise, -1 a fall)."""
    words = _WORD.findall(text.lower())
    found = []
    for i, word in enumerate(words):
        if word in ("up", "down") and i and words[i - 1] in _PHRASAL:
            continue
        if word in _RISING or word in _FALLING:
            found.append((word, 1 if word in _RISING else -1))
    return found


def _fact_direction(fact: Fact) -> int | None:
    """Which way the fact says its subject moved against an earlier period: 1, -1, 0 (unchanged), or None
    for a fact that compares with nothing. Read from the values the fact's sentence was written from."""
    values = fact.values
    if values.get("change") is not None:  # the pipeline's moves, "unchanged" when they round to nothing
        rounded = half_up(values["change"])
        return (rounded > 0) - (rounded < 0)
    if values.get("change_pct") is not None:  # the lead trend, in whole percent: "up 0%" is no move
        rounded = half_up(values["change_pct"])
        return (rounded > 0) - (rounded < 0)
    if values.get("previous_7d_daily_average") is not None:  # new leads against the week's daily average
        delta = values.get("count", 0) - values["previous_7d_daily_average"]
        return (delta > 0) - (delta < 0)
    if values.get("win_rate") is not None and values.get("win_rate_30d") is not None:  # the day against 30 days
        delta = values["win_rate"] - values["win_rate_30d"]
        return (delta > 0) - (delta < 0)
    return None


def _contradiction(comment: str, fact: Fact) -> str | None:
    """The first word of `comment` claiming a direction that the fact's own movement contradicts, or None.
    A fact that compares with nothing contradicts nothing; one that did not move contradicts every direction."""
    direction = _fact_direction(fact)
    if direction is None:
        return None
    return next((word for word, sign in _directions(comment) if sign != direction), None)


def _related(a: str, b: str) -> bool:
    """Two content words about the same thing: equal, one the other's stem ("update", "updated", "close",
    "closing"), or sharing a stem of five letters ("converted", "conversion")."""
    a, b = a.removesuffix("e"), b.removesuffix("e")
    short, long = sorted((a, b), key=len)
    if short == long:
        return True
    if len(short) < 4:
        return False
    return long.startswith(short) or (len(short) >= 5 and long[:5] == short[:5])


def _words(text: str) -> set[str]:
    """The content words of `text`, without stop words, plurals folded ("deals" -> "deal")."""
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def _subject(fact: Fact) -> str:
    """The fact's title without its qualifier: "Pipeline change (day)" -> "pipeline change"."""
    return re.sub(r"\s*\(.*?\)", "", fact.title).strip().lower()


def _garbled(text: str) -> bool:
    """Letters that are not words: a run of single letters ("d a b e"), a word too long to be one, or the
    same word again and again (a small model in a loop)."""
    words = _WORD.findall(text.lower())
    singles = [w for w in words if len(w) == 1 and w not in ("a", "i")]
    content = [w for w in words if w not in _STOPWORDS]
    return len(singles) > 1 or any(len(w) > 20 for w in words) or any(content.count(w) > 2 for w in set(content))


def comment_problem(
    comment: str, fact: Fact, day: DayFacts, limit: int = COMMENT_MAX, action: str | None = None
) -> str | None:
    """Why `comment` on `fact` (and on `action`, for a next step) is not worth showing, or None."""
    shown = plain_text(comment)
    if not shown:
        return "empty"
    if not re.fullmatch(comment_pattern(limit), shown) or _garbled(shown):
        return f"not {limit} characters of plain words"
    last = _WORD.findall(shown.lower())[-1:]
    if shown[-1] in ":;,'" or (last and last[0] in _DANGLING):
        return "unfinished"
    problem = quantity_problem(comment)
    if problem:
        return problem
    content = _words(shown)
    if not content - _GENERIC_STEMS:
        return "generic"
    said = f"{fact.title} {fact.prompt_text()}"
    if action is not None:
        said += f" {action.replace('_', ' ')} {ACTIONS.get(action, '')}"
    own = _words(said)
    if content <= own | _GENERIC_STEMS:
        return "repeats the fact" if action is None else "repeats the step"
    # A remark about its fact names what the fact is about: at least one word of substance in common.
    topical = {w for w in content - _GENERIC_STEMS if len(w) > 1}
    if not any(_related(w, o) for w in topical for o in own - _GENERIC_STEMS if len(o) > 1):
        return "not about its fact" if action is None else "not about its fact or step"
    wrong = _contradiction(shown, fact)
    if wrong:
        moved = {1: "rose", -1: "fell", 0: "did not move"}[_fact_direction(fact) or 0]
        return f"says '{wrong}' but {_subject(fact)} {moved}"
    text = f" {' '.join(_WORD.findall(shown.lower()))} "
    own_text = f" {' '.join(_WORD.findall((fact.title + ' ' + fact.prompt_text()).lower()))} "
    for other in day.facts:
        subject = _subject(other)
        if other.id != fact.id and f" {subject} " in text and f" {subject} " not in own_text:
            return f"about another fact ({other.title})"
    return None


@dataclass(frozen=True)
class Dropped:
    fact_id: str
    comment: str
    reason: str


@dataclass(frozen=True)
class Review:
    """The settled plan and what settling it changed."""

    plan: Plan
    comments_kept: int = 0
    dropped: tuple[Dropped, ...] = ()
    added: tuple[str, ...] = ()  # facts that need attention the model left out, added by code
    repeats: tuple[str, ...] = ()  # facts the model listed more than once (shown once)

    def as_json(self) -> dict[str, Any]:
        return {
            "comments_kept": self.comments_kept,
            "comments_dropped": [asdict(d) for d in self.dropped],
            "attention_added": list(self.added),
            "repeats_dropped": list(self.repeats),
        }


def settle(plan: Plan, day: DayFacts) -> Review:
    """`plan` with the editorial rules applied (see the module docstring)."""
    dropped: list[Dropped] = []
    kept = 0
    repeats: list[str] = []
    shown: set[str] = set()
    known = set(day.ids)

    # A remark the model put on several facts is about none of them.
    said = [plain_text(p.comment).lower() for p in plan.picks() if plain_text(p.comment)]
    everywhere = {c for c in said if said.count(c) > 1}

    def reviewed(pick: Pick | Step) -> Pick | Step:
        nonlocal kept
        if not pick.comment:
            return pick
        if plain_text(pick.comment).lower() in everywhere:
            dropped.append(Dropped(pick.fact_id, pick.comment, "the same remark on several facts"))
            return replace(pick, comment="")
        problem = comment_problem(
            pick.comment, day.get(pick.fact_id), day, action=pick.action if isinstance(pick, Step) else None
        )
        if problem:
            dropped.append(Dropped(pick.fact_id, pick.comment, problem))
            return replace(pick, comment="")
        kept += 1
        return pick

    def once(picks: tuple[Pick, ...], attention: bool) -> list[Pick]:
        out = []
        for pick in picks:
            if pick.fact_id not in known or needs_attention(day.get(pick.fact_id)) != attention:
                continue  # the schema rules these out; a server that ignores the grammar does not
            if pick.fact_id in shown:
                repeats.append(pick.fact_id)
                continue
            shown.add(pick.fact_id)
            out.append(reviewed(pick))  # type: ignore[arg-type]
        return out

    headline = reviewed(plan.headline)
    shown.add(headline.fact_id)
    highlights = once(plan.highlights, attention=False)
    risks = once(plan.risks, attention=True)
    added = tuple(fid for fid in attention_ids(day) if fid not in shown)
    risks += [Pick(fid) for fid in added]
    actions: list[Step] = []
    for step in plan.actions:
        if step.fact_id in known and step.action not in {s.action for s in actions} and len(actions) < MAX_ACTIONS:
            actions.append(reviewed(step))  # type: ignore[arg-type]
    settled = Plan(headline, tuple(highlights), tuple(risks), tuple(actions))  # type: ignore[arg-type]
    return Review(settled, kept, tuple(dropped), added, tuple(repeats))
