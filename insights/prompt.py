"""What the model is asked, and the only answer shape it may give.

The prompt is rendered from `insights/templates/*.prompt.j2` and contains the
facts' ids, titles and code-formatted sentences, with entities as placeholders
(`[D1]`, `[U1]`): no CRM free text ever reaches it, so a lead named
"Ignore previous instructions ..." has nothing to inject into.

The answer is a `Plan`: which fact leads, which are highlights and risks, which
fixed actions to suggest, each with a short comment. The JSON schema sent as
Ollama's `format` is generated per run so fact ids are an enum of today's ids
and each action can only be paired with a fact that calls for it; it is flat
(no `$ref`) because llama.cpp's grammar converter mishandles nested references.

Comments carry no figures at all: every number in the message comes from the
facts. A comment is normalised (NFKC, no markup) *before* it is checked, so what
is checked is exactly what is shown: "½" becomes "1⁄2" and "Ⅻ" becomes "XII"
only after the raw text has been refused for them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Callable, Literal, Sequence

from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from insights.facts import DayFacts, Fact, fmt_date

VERSION = "briefing-v2"

COMMENT_MAX = 80
MAX_HIGHLIGHTS = 3
MAX_RISKS = 2
MAX_ACTIONS = 2

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
}

# Which actions a fact calls for, given its values: sharing the wins needs a win, chasing a move of the
# pipeline needs a move worth a warning. The model may pair a fact only with these (the first is what the
# standard briefing suggests); a fact absent here calls for no action.
_ACTIONS_FOR: dict[str, Callable[[Fact], tuple[str, ...]]] = {
    "overdue_deals": lambda f: ("chase_overdue_deals",),
    "closing_soon": lambda f: ("review_closing_deals",),
    "stale_deals": lambda f: ("clean_up_stale_deals",),
    "new_leads": lambda f: ("follow_up_new_leads",) if f.values.get("count") else (),
    "deals_lost": lambda f: ("review_lost_deals",) if f.values.get("count") else (),
    "top_deal_lost": lambda f: ("review_lost_deals",),
    "deals_won": lambda f: ("share_wins",) if f.values.get("count") else (),
    "top_deal_won": lambda f: ("share_wins",),
    "pipeline_change_1d": lambda f: ("investigate_pipeline_change",) if f.severity == "warn" else (),
    "pipeline_change_7d": lambda f: ("investigate_pipeline_change",) if f.severity == "warn" else (),
    "win_rate": lambda f: ("review_win_rate",) if f.severity == "warn" else (),
}


def actions_for(fact: Fact) -> tuple[str, ...]:
    """The action ids that fit `fact` (possibly none)."""
    rule = _ACTIONS_FOR.get(fact.id)
    return rule(fact) if rule else ()


# --------------------------------------------------------------------------- plain words

_MARKUP = re.compile(r"[*_~`]")
_SPACES = re.compile(r"\s+")

# Number words would let a comment state a figure without a digit ("revenue doubled", "a tenfold rise").
# Letters, not \b, delimit them: in the message a comment sits between WhatsApp's `_` markers, which \b
# counts as a letter. "first" and "second" are left out: they rarely state a quantity.
_ROOTS = (
    "zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    "seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|"
    "million|billion|trillion|dozen|many"
)
NUMBER_WORDS = re.compile(
    rf"(?<![a-z])(?:(?:{_ROOTS})-?fold|(?:{_ROOTS.removesuffix('|many')})s?"
    r"|doubl(?:e[sd]?|ing)|tripl(?:e[sd]?|ing)|quadrupl(?:e[sd]?|ing)|quintupl(?:e[sd]?|ing)"
    r"|half|halv(?:e[sd]?|ing)|twice|thrice|couples?|nil|nought|naught"
    r"|thirds?|fourths?|fifths?|sixths?|sevenths?|eighths?|ninths?|tenths?|hundredths?|thousandths?"
    r"|a\s+quarter\s+of|per\s*cent(?:age)?s?|pct)(?![a-z])",
    re.IGNORECASE,
)
# Roman numerals in capitals ("XII"): two or more numeral letters forming a valid numeral.
_ROMAN = re.compile(
    r"(?<![A-Za-z])(?=[MDCLXVI]{2,}(?![A-Za-z]))M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})(?![A-Za-z])"
)
# What WhatsApp would make clickable: URLs, www., e-mail addresses and bare domains (evil.com/pay, wa.me/123).
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
LINK = re.compile(
    r"(?:https?:|[a-z][a-z0-9+.-]*://|www\.)\S*"
    r"|[\w.+-]+@\S+"
    rf"|(?<![\w@.-])(?:{_LABEL}\.)+[^\W\d_]{{2,24}}(?![\w-])(?:[/:?#]\S*)?",
    re.IGNORECASE,
)


def plain_text(raw: str) -> str:
    """Text as the message shows it: NFKC-normalised, without control, invisible or markup characters,
    on one line with single spaces. Idempotent, so a checked comment is exactly the shown one."""
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in raw)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cf", "Co", "Cs", "Cn"))
    text = _MARKUP.sub("", unicodedata.normalize("NFKC", text))
    return _SPACES.sub(" ", text).strip()


def _figure_in(text: str) -> str | None:
    """The first digit, numeral or fraction in any script (ideographs such as 十 included), or sign of
    one (%, a currency), in `text`; None when there is none."""
    for ch in text:
        category = unicodedata.category(ch)
        if category[0] == "N" or category == "Sc" or ch in "%\u2030\u2031" or unicodedata.numeric(ch, None) is not None:
            return ch
    return None


def comment_problem(text: str) -> str | None:
    """Why `text` may not stand as a comment (it states a quantity or carries a link), or None."""
    figure = _figure_in(text)
    if figure is not None:
        return f"comments must not contain figures (found {figure!r})"
    word = NUMBER_WORDS.search(text) or _ROMAN.search(text)
    if word:
        return f"comments must not state quantities (found {word.group(0)!r})"
    if LINK.search(text):
        return "comments must not contain links or addresses"
    return None


def _normalised(value: Any) -> Any:
    """Refuse raw figures that normalisation would turn into letters ("Ⅻ" -> "XII"), then normalise:
    the checks that follow see the text exactly as the message will show it."""
    if not isinstance(value, str):
        return value
    figure = _figure_in(value)
    if figure is not None:
        raise ValueError(f"comments must not contain figures (found {figure!r})")
    return plain_text(value)


def _plain_words(comment: str) -> str:
    problem = comment_problem(comment)
    if problem:
        raise ValueError(problem)
    return comment


# What a comment may be written with, in the schema too: under Ollama's grammar the model cannot even emit a
# digit, a fraction, a numeral of another script, a currency sign or WhatsApp markup.
COMMENT_PATTERN = r"^[A-Za-z ,.;:'!?()-]*$"

Comment = Annotated[
    str,
    Field(max_length=COMMENT_MAX, pattern=COMMENT_PATTERN, description="a short remark in plain English words, no figures"),
    BeforeValidator(_normalised),
    AfterValidator(_plain_words),
]


# --------------------------------------------------------------------------- the answer


@dataclass(frozen=True)
class Pick:
    fact_id: str
    comment: str = ""


@dataclass(frozen=True)
class Step:
    fact_id: str
    action: str
    comment: str = ""


@dataclass(frozen=True)
class Plan:
    """What the briefing shows: chosen by the model, or by `compose.fallback_plan`."""

    headline: Pick
    highlights: tuple[Pick, ...] = ()
    risks: tuple[Pick, ...] = ()
    actions: tuple[Step, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_answer(cls, answer: BaseModel) -> "Plan":
        data = answer.model_dump()
        return cls(
            headline=Pick(**data["headline"]),
            highlights=tuple(Pick(**p) for p in data["highlights"]),
            risks=tuple(Pick(**p) for p in data["risks"]),
            actions=tuple(Step(**s) for s in data["actions"]),
        )


def answer_model(day: DayFacts) -> type[BaseModel]:
    """The pydantic model of a valid answer for these facts.

    Fact ids are an enum of today's ids, and an action step must pair a fact
    with one of the actions it calls for (`actions_for`). Both are in the JSON
    schema, so a grammar-constrained model cannot break them, and are checked
    again on validation for a server that ignores the grammar.
    """
    FactId = Literal[tuple(day.ids)]  # type: ignore[valid-type]
    ActionId = Literal[tuple(ACTIONS)]  # type: ignore[valid-type]
    fits = {f.id: actions_for(f) for f in day.facts}
    pairs = {a: [fid for fid, acts in fits.items() if a in acts] for a in ACTIONS}
    strict = ConfigDict(extra="forbid")

    def one_branch_per_action(schema: dict[str, Any]) -> None:
        """{fact_id, action} as one alternative per action, each with the facts it fits."""
        branches = [
            {**schema, "properties": {**schema["properties"], "fact_id": {"type": "string", "enum": ids},
                                      "action": {"type": "string", "enum": [action]}}}
            for action, ids in pairs.items() if ids
        ]
        if branches:
            schema.clear()
            schema["anyOf"] = branches

    class PickAnswer(BaseModel):
        model_config = strict
        fact_id: FactId  # type: ignore[valid-type]
        comment: Comment

    class StepAnswer(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra=one_branch_per_action)
        fact_id: FactId  # type: ignore[valid-type]
        action: ActionId  # type: ignore[valid-type]
        comment: Comment

        @model_validator(mode="after")
        def _fits_its_fact(self) -> "StepAnswer":
            allowed = fits[self.fact_id]
            if self.action not in allowed:
                hint = f"choose {' or '.join(allowed)}" if allowed else "it calls for no action"
                raise ValueError(f"action {self.action!r} does not fit fact {self.fact_id!r}: {hint}")
            return self

    class Answer(BaseModel):
        model_config = strict
        headline: PickAnswer
        highlights: list[PickAnswer] = Field(min_length=1, max_length=MAX_HIGHLIGHTS)
        risks: list[PickAnswer] = Field(max_length=MAX_RISKS)
        actions: list[StepAnswer] = Field(max_length=MAX_ACTIONS if any(fits.values()) else 0)

    return Answer


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every `$ref` inlined and titles dropped (smaller grammar)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


# --------------------------------------------------------------------------- the prompt

_templates = Environment(
    loader=PackageLoader("insights", "templates"),
    undefined=StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


@dataclass(frozen=True)
class Prompt:
    day: DayFacts  # the facts the model saw (the most important ones when the prompt had to shrink)
    messages: list[dict[str, str]]
    schema: dict[str, Any]
    answer: type[BaseModel] = field(repr=False)

    @property
    def estimated_tokens(self) -> int:
        return estimate_tokens(self.messages)

    @property
    def hash(self) -> str:
        payload = json.dumps({"version": VERSION, "messages": self.messages, "format": self.schema}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


def estimate_tokens(messages: Sequence[dict[str, str]]) -> int:
    """A deliberately high estimate: Llama's tokenizer averages about four characters a token
    on English prose; figures and JSON run denser, so count three, plus the chat template's
    few tokens per message."""
    return sum(math.ceil(len(m["content"]) / 3) + 8 for m in messages)


def render(day: DayFacts) -> Prompt:
    answer = answer_model(day)
    schema = json_schema(answer)
    system = _templates.get_template("system.prompt.j2").render(
        actions=ACTIONS,
        comment_max=COMMENT_MAX, max_highlights=MAX_HIGHLIGHTS, max_risks=MAX_RISKS, max_actions=MAX_ACTIONS,
    )
    user = _templates.get_template("briefing.prompt.j2").render(
        report_date=fmt_date(day.report_date), facts=day.facts, actions_for=actions_for,
    )
    return Prompt(day, [{"role": "system", "content": system}, {"role": "user", "content": user}], schema, answer)


def fit(day: DayFacts, budget_tokens: int, minimum_facts: int = 3) -> Prompt | None:
    """The prompt with as many facts as fit in `budget_tokens`, dropping the least important first.

    Ollama truncates an over-long prompt silently, so the prompt is sized here
    instead; None when even the `minimum_facts` most important facts do not fit.
    """
    for keep in range(len(day.facts), minimum_facts - 1, -1):
        prompt = render(day.top(keep))
        if prompt.estimated_tokens <= budget_tokens:
            return prompt
    return None


def retry_message(problem: str) -> dict[str, str]:
    return {"role": "user", "content": _templates.get_template("retry.prompt.j2").render(problem=problem)}
