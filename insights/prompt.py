"""What the model is asked, and the only answer shape it may give.

The prompt is rendered from `insights/templates/*.prompt.j2` and contains the
facts' ids, titles and code-formatted sentences, with entities as placeholders
(`[D1]`, `[U1]`): no CRM free text ever reaches it, so a lead named
"Ignore previous instructions ..." has nothing to inject into.

The answer is a `Plan`: which fact leads, which are highlights and which need
attention, which fixed actions to suggest, each with a short comment. The JSON
schema sent as Ollama's `format` is generated per run and every bound in it is
one that llama.cpp's grammar (what Ollama compiles `format` into) enforces:

- fact ids are enums: the headline and highlights offer only facts that do not
  need attention, "risks" only facts that do (`insights.policy`);
- each action is offered only with the facts it fits (one `anyOf` branch per action);
- list sizes are `maxItems`;
- a comment's length is inside its `pattern` (`^([A-Za-z][a-z ...]{0,79})?$`): llama.cpp's
  converter ignores `maxLength` on a string that also has a pattern, so a
  `maxLength` there would be a bound only pydantic knew about.

So an answer the grammar allows always validates. What a grammar cannot check
(a number word, a comment that says nothing, a fact listed twice, a risk the
model left out) costs a comment or is repaired in `insights.review`, never the
whole answer. The schema is flat (no `$ref`): the converter mishandles nested
references.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal

from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict, Field, model_validator

from insights import tokens
from insights.facts import DayFacts, fmt_date
from insights.policy import ACTIONS, actions_for, attention_ids, needs_attention, other_ids

VERSION = "briefing-v3"

# A comment is empty, or a letter then lower-case words and punctuation: no digit, numeral, currency sign,
# WhatsApp markup, name or acronym can even be written, nor the letter chains ("D-A-B-E-C") a small model
# falls into when it has nothing to say.
COMMENT_FIRST = "A-Za-z"
COMMENT_CHARS = "a-z ,.;:'!?"
COMMENT_MAX = 80
MAX_HIGHLIGHTS = 3
MAX_ACTIONS = 2


def comment_pattern(limit: int) -> str:
    return f"^([{COMMENT_FIRST}][{COMMENT_CHARS}]{{0,{limit - 1}}})?$"


@dataclass(frozen=True)
class Ask:
    """How much the model is asked to write; a retry after a cut-off answer asks for less."""

    comment_max: int = COMMENT_MAX
    max_highlights: int = MAX_HIGHLIGHTS
    max_actions: int = MAX_ACTIONS


SMALLER_ASK = Ask(comment_max=40, max_highlights=2, max_actions=1)


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

    def picks(self) -> list[Pick | Step]:
        return [self.headline, *self.highlights, *self.risks, *self.actions]

    @classmethod
    def from_answer(cls, answer: BaseModel) -> Plan:
        data = answer.model_dump()
        return cls(
            headline=Pick(**data["headline"]),
            highlights=tuple(Pick(**p) for p in data["highlights"]),
            risks=tuple(Pick(**p) for p in data["risks"]),
            actions=tuple(Step(**s) for s in data["actions"]),
        )


def answer_model(day: DayFacts, ask: Ask = Ask()) -> type[BaseModel]:
    """The pydantic model of a valid answer for these facts, and through it the JSON schema of `format`.

    Comments are free strings to pydantic: their pattern is in the schema for the grammar, and the
    comment rules are applied by `insights.review`, which drops a bad comment and keeps the answer.
    """
    others, attention = other_ids(day), attention_ids(day)
    OtherId = Literal[tuple(others)]  # type: ignore[valid-type]
    AttentionId = Literal[tuple(attention or day.ids)]  # type: ignore[valid-type]  # unused when there is none
    AnyId = Literal[tuple(day.ids)]  # type: ignore[valid-type]
    ActionId = Literal[tuple(ACTIONS)]  # type: ignore[valid-type]
    Comment = Annotated[
        str,
        Field(
            json_schema_extra={"pattern": comment_pattern(ask.comment_max)},
            description="a short remark in plain words, no figures",
        ),
    ]
    fits = {f.id: actions_for(f) for f in day.facts}
    pairs = {a: [fid for fid, acts in fits.items() if a in acts] for a in ACTIONS}
    strict = ConfigDict(extra="forbid")

    def one_branch_per_action(schema: dict[str, Any]) -> None:
        """{fact_id, action} as one alternative per action, each with the facts it fits."""
        branches = [
            {
                **schema,
                "properties": {
                    **schema["properties"],
                    "fact_id": {"type": "string", "enum": ids},
                    "action": {"type": "string", "enum": [action]},
                },
            }
            for action, ids in pairs.items()
            if ids
        ]
        if branches:
            schema.clear()
            schema["anyOf"] = branches

    class OtherPick(BaseModel):
        model_config = strict
        fact_id: OtherId  # type: ignore[valid-type]
        comment: Comment

    class AttentionPick(BaseModel):
        model_config = strict
        fact_id: AttentionId  # type: ignore[valid-type]
        comment: Comment

    class StepAnswer(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra=one_branch_per_action)
        fact_id: AnyId  # type: ignore[valid-type]
        action: ActionId  # type: ignore[valid-type]
        comment: Comment

        @model_validator(mode="after")
        def _fits_its_fact(self) -> StepAnswer:
            allowed = fits[self.fact_id]
            if self.action not in allowed:
                hint = f"choose {' or '.join(allowed)}" if allowed else "it calls for no action"
                raise ValueError(f"action {self.action!r} does not fit fact {self.fact_id!r}: {hint}")
            return self

    class Answer(BaseModel):
        model_config = strict
        headline: OtherPick
        highlights: list[OtherPick] = Field(min_length=1 if len(others) > 1 else 0, max_length=ask.max_highlights)
        risks: list[AttentionPick] = Field(max_length=len(attention))
        actions: list[StepAnswer] = Field(max_length=ask.max_actions if any(fits.values()) else 0)

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


def answer_budget(ask: Ask, attention: int) -> int:
    """`num_predict` for an answer of this shape: about forty tokens an item plus the braces.

    The grammar already bounds the answer (item counts, comment lengths, llama.cpp's bounded
    whitespace); this cap is what makes a run-away answer end in seconds rather than minutes.
    """
    items = 1 + ask.max_highlights + attention + ask.max_actions
    # Ids and keys, then the comment at two characters a token: small models' tokenizers split these short
    # lower-case remarks finely, and at four characters a token a real answer ran into the cap on 1 day of 6
    # (368 tokens), then again on the retry's smaller ask (224).
    per_item = 14 + (ask.comment_max + 1) // 2
    return 48 + items * per_item


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
    ask: Ask = Ask()

    @cached_property
    def tokens(self) -> int:
        """Prompt tokens on Llama 3.2's tokenizer, chat template included."""
        return tokens.count(self.messages)

    @property
    def num_predict(self) -> int:
        return answer_budget(self.ask, len(attention_ids(self.day)))

    @property
    def hash(self) -> str:
        payload = json.dumps({"version": VERSION, "messages": self.messages, "format": self.schema}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def with_note(self, problem: str) -> Prompt:
        """The same request with one short line on what was wrong with the last answer (never the answer
        itself: a small model shown its own answer tends to repeat it)."""
        note = _templates.get_template("retry.prompt.j2").render(problem=problem[:200])
        system, user = self.messages
        return Prompt(
            self.day,
            [system, {"role": "user", "content": f"{user['content']}\n\n{note}"}],
            self.schema,
            self.answer,
            self.ask,
        )


def render(day: DayFacts, ask: Ask = Ask()) -> Prompt:
    answer = answer_model(day, ask)
    schema = json_schema(answer)
    # Only the actions some fact of the day fits: the others cannot be chosen, and an owner's digest would
    # otherwise carry the team's whole list (and the team's the owners') in every prompt.
    fitting = {a for f in day.facts for a in actions_for(f)}
    system = _templates.get_template("system.prompt.j2").render(
        actions={a: sentence for a, sentence in ACTIONS.items() if a in fitting},
        comment_max=ask.comment_max,
        max_highlights=ask.max_highlights,
        max_actions=ask.max_actions,
    )
    user = _templates.get_template("briefing.prompt.j2").render(
        report_date=fmt_date(day.report_date),
        attention=[f for f in day.facts if needs_attention(f)],
        others=[f for f in day.facts if not needs_attention(f)],
        actions_for=actions_for,
    )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return Prompt(day, messages, schema, answer, ask)


def fit(
    day: DayFacts, max_ctx: int, ask: Ask = Ask(), scale: float = 1.0, margin: int = 0, minimum_others: int = 2
) -> Prompt | None:
    """The prompt with as many facts as fit: prompt tokens (times `scale`, for a model whose tokenizer
    needs more) + the answer's budget + `margin` <= `max_ctx`.

    Ollama truncates an over-long prompt silently, so the prompt is sized here, on the exact token
    count, leaving out the least important facts that do not need attention first. None when even
    the facts that need attention and the `minimum_others` most important others do not fit.
    """
    attention, others = attention_ids(day), other_ids(day)
    for keep in range(len(others), min(minimum_others, len(others)) - 1, -1):
        kept = set(attention) | set(others[:keep])
        prompt = render(DayFacts(day.report_date, tuple(f for f in day.facts if f.id in kept)), ask)
        if math.ceil(prompt.tokens * scale) + prompt.num_predict + margin <= max_ctx:
            return prompt
    return None
