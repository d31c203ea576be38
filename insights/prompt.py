"""What the model is asked, and the only answer shape it may give.

The prompt is rendered from `insights/templates/*.prompt.j2` and contains the
facts' ids, titles and code-formatted sentences, with entities as placeholders
(`[D1]`, `[U1]`): no CRM free text ever reaches it, so a lead named
"Ignore previous instructions ..." has nothing to inject into.

The answer is a `Plan`: which fact leads, which are highlights and risks, which
fixed actions to suggest, each with a short comment. The JSON schema sent as
Ollama's `format` is generated per run so fact ids are an enum of today's ids;
it is flat (no `$ref`) because llama.cpp's grammar converter mishandles nested
references. Comments may not contain digits: every number in the message comes
from the facts.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, Sequence

from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from insights.facts import DayFacts, fmt_date

VERSION = "briefing-v1"

COMMENT_MAX = 80
MAX_HIGHLIGHTS = 3
MAX_RISKS = 2
MAX_ACTIONS = 2

# The next steps the model may suggest; the sentences are ours, the model only picks.
ACTIONS: dict[str, str] = {
    "chase_overdue_deals": "Ask owners to update or close the overdue deals",
    "review_closing_deals": "Review the deals due to close this week",
    "clean_up_stale_deals": "Clean up deals without recent updates",
    "follow_up_new_leads": "Make sure the new leads get a first call",
    "review_lost_deals": "Go over why deals were lost",
    "share_wins": "Share the wins with the team",
    "investigate_pipeline_change": "Find out what moved the pipeline",
    "review_win_rate": "Look at what is holding back the win rate",
}

# Number words would let a comment state a figure without a digit ("revenue doubled"). Letters, not \b,
# delimit them: in the message a comment sits between WhatsApp's `_` markers, which \b counts as a letter.
NUMBER_WORDS = re.compile(
    r"(?<![a-z])(zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    r"seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundreds?|thousands?|"
    r"millions?|billions?|dozens?|double[sd]?|tripled?|triples|half|twice|percent|percentage)(?![a-z])",
    re.IGNORECASE,
)
_LINK = re.compile(r"https?:|www\.|@|\.com\b", re.IGNORECASE)


def _plain_words(comment: str) -> str:
    """No figures in any script, no number words, no links: the numbers come from the facts only."""
    if any(ch.isdigit() for ch in comment):  # the schema's pattern stops ASCII digits; this the others
        raise ValueError("comments must not contain digits")
    word = NUMBER_WORDS.search(comment)
    if word:
        raise ValueError(f"comments must not state quantities (found {word.group(0)!r})")
    if _LINK.search(comment):
        raise ValueError("comments must not contain links or addresses")
    return comment


Comment = Annotated[
    str,
    Field(max_length=COMMENT_MAX, pattern=r"^[^0-9]*$", description="a short plain-words remark, no digits"),
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


def answer_model(fact_ids: Sequence[str]) -> type[BaseModel]:
    """The pydantic model of a valid answer for these fact ids (an enum: unknown ids are rejected)."""
    FactId = Literal[tuple(fact_ids)]  # type: ignore[valid-type]
    ActionId = Literal[tuple(ACTIONS)]  # type: ignore[valid-type]
    strict = ConfigDict(extra="forbid")

    class PickAnswer(BaseModel):
        model_config = strict
        fact_id: FactId  # type: ignore[valid-type]
        comment: Comment

    class StepAnswer(BaseModel):
        model_config = strict
        fact_id: FactId  # type: ignore[valid-type]
        action: ActionId  # type: ignore[valid-type]
        comment: Comment

    class Answer(BaseModel):
        model_config = strict
        headline: PickAnswer
        highlights: list[PickAnswer] = Field(min_length=1, max_length=MAX_HIGHLIGHTS)
        risks: list[PickAnswer] = Field(max_length=MAX_RISKS)
        actions: list[StepAnswer] = Field(max_length=MAX_ACTIONS)

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
    answer = answer_model(day.ids)
    schema = json_schema(answer)
    system = _templates.get_template("system.prompt.j2").render(
        actions=ACTIONS,
        comment_max=COMMENT_MAX, max_highlights=MAX_HIGHLIGHTS, max_risks=MAX_RISKS, max_actions=MAX_ACTIONS,
    )
    user = _templates.get_template("briefing.prompt.j2").render(
        report_date=fmt_date(day.report_date), facts=day.facts,
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
