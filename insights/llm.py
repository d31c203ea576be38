"""Ask the local model (Ollama) to choose the day's facts; never raise, never trust the answer.

The model gets the prompt of `insights.prompt`, answers through Ollama's
structured outputs (`format` = the JSON schema of today's answer), and the
answer is validated with pydantic. An invalid answer gets one retry with the
problem appended; after that, or when Ollama cannot answer at all (not
running, model not pulled, timeout), the outcome carries a `Failure` and the
caller builds the deterministic briefing from the same facts. A malformed
OLLAMA_BASE_URL is such a failure too, not a crash.

Sampling options go inside `options` (top-level ones are silently ignored by
Ollama), and `num_ctx` is always sent: Ollama truncates an over-long prompt
silently, so the prompt is sized to fit (`prompt.fit`) and the reported
`prompt_eval_count` is checked against it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import ollama
from pydantic import ValidationError

from insights import prompt as prompts
from insights.facts import DayFacts
from insights.settings import OllamaSettings

NUM_CTX = 8192
NUM_PREDICT = 1024  # a complete answer is about 400 tokens; this is only a cap
CONTEXT_MARGIN = 256
SEED = 42
TIMEOUT = httpx.Timeout(connect=5.0, read=180.0, write=10.0, pool=5.0)

# Why the model's answer was not used; stored in ai_summaries.fallback_reason as "<code>: <detail>".
RETRYABLE = {"empty_answer", "prose", "invalid_json", "unknown_fact_id", "schema_violation", "truncated"}


@dataclass(frozen=True)
class Failure:
    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True)
class Attempt:
    content: str | None
    plan: prompts.Plan | None = None
    done_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float = 0.0
    failure: Failure | None = None


@dataclass
class Outcome:
    """What the model stage produced: a plan, or the failure that sends us to the fallback."""

    prompt: prompts.Prompt | None
    plan: prompts.Plan | None = None
    failure: Failure | None = None
    attempts: list[Attempt] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def model_json(self) -> str | None:
        """The model's last answer, verbatim (None when it gave none)."""
        answered = [a.content for a in self.attempts if a.content is not None]
        return answered[-1] if answered else None

    @property
    def prompt_tokens(self) -> int | None:
        counts = [a.prompt_tokens for a in self.attempts if a.prompt_tokens is not None]
        return sum(counts) if counts else None

    @property
    def completion_tokens(self) -> int | None:
        counts = [a.completion_tokens for a in self.attempts if a.completion_tokens is not None]
        return sum(counts) if counts else None


def options(num_ctx: int = NUM_CTX, num_predict: int = NUM_PREDICT) -> dict[str, Any]:
    return {"temperature": 0, "seed": SEED, "num_ctx": num_ctx, "num_predict": num_predict}


def choose(
    day: DayFacts,
    settings: OllamaSettings,
    *,
    num_ctx: int = NUM_CTX,
    num_predict: int = NUM_PREDICT,
    timeout: httpx.Timeout | float = TIMEOUT,
) -> Outcome:
    """Ask the model for a plan; every problem ends in `Outcome.failure`, never in an exception."""
    started = time.perf_counter()
    prompt = prompts.fit(day, budget_tokens=num_ctx - num_predict - CONTEXT_MARGIN)
    if prompt is None:
        failure = Failure("prompt_too_long", f"the facts do not fit in num_ctx={num_ctx}")
        return Outcome(None, failure=failure, seconds=time.perf_counter() - started)
    outcome = Outcome(prompt)
    client, problem = _client(settings, timeout)
    if client is None:
        outcome.failure = Failure("ollama_error", problem[:300])
        outcome.seconds = time.perf_counter() - started
        return outcome
    messages = list(prompt.messages)
    try:
        for retry in (False, True):
            attempt = _ask(client, settings, messages, prompt, num_ctx, num_predict)
            outcome.attempts.append(attempt)
            if attempt.plan is not None:
                outcome.plan = attempt.plan
                break
            assert attempt.failure is not None
            if retry or attempt.failure.code not in RETRYABLE:
                detail = f"{attempt.failure.detail} (after one retry)" if retry else attempt.failure.detail
                outcome.failure = Failure(attempt.failure.code, detail)
                break
            messages = [*messages, {"role": "assistant", "content": attempt.content or ""},
                        prompts.retry_message(_retry_problem(attempt.failure))]
    finally:
        client.close()
        outcome.seconds = time.perf_counter() - started
    return outcome


def _client(settings: OllamaSettings, timeout: httpx.Timeout | float) -> tuple[ollama.Client | None, str]:
    """The Ollama client, or why OLLAMA_BASE_URL cannot give one. A daily job treats a malformed URL like
    an Ollama that is down: the standard briefing still goes out, with the reason."""
    if settings.url_problem:
        return None, settings.url_problem
    try:
        return ollama.Client(host=settings.base_url, timeout=timeout), ""
    except ValueError as exc:
        return None, f"OLLAMA_BASE_URL {settings.base_url!r} is not a valid URL ({exc})"


def _retry_problem(failure: Failure) -> str:
    if failure.code == "truncated":
        return "it was cut off before the JSON object was complete; keep the comments shorter."
    return failure.detail


def _ask(
    client: ollama.Client,
    settings: OllamaSettings,
    messages: list[dict[str, str]],
    prompt: prompts.Prompt,
    num_ctx: int,
    num_predict: int,
) -> Attempt:
    started = time.perf_counter()
    model = settings.model

    def failed(code: str, detail: str, content: str | None = None, **metrics: Any) -> Attempt:
        return Attempt(content, seconds=time.perf_counter() - started, failure=Failure(code, detail), **metrics)

    try:
        response = client.chat(
            model=model, messages=messages, stream=False, format=prompt.schema,
            options=options(num_ctx, num_predict),
        )
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            return failed("model_not_found", f"Ollama has no model {model!r}; run `ollama pull {model}`")
        return failed("ollama_error", f"HTTP {exc.status_code}: {exc.error}"[:300])
    except ConnectionError:
        return failed("ollama_unreachable", f"no Ollama server answered at {settings.base_url}")
    except httpx.TimeoutException as exc:
        return failed("timeout", f"Ollama did not answer in time ({type(exc).__name__})")
    except (httpx.HTTPError, ValidationError, ValueError) as exc:  # a broken response or transport
        return failed("ollama_error", f"{type(exc).__name__}: {exc}"[:300])

    content = response.message.content or ""
    metrics = dict(
        done_reason=response.done_reason,
        prompt_tokens=response.prompt_eval_count,
        completion_tokens=response.eval_count,
    )
    if response.prompt_eval_count is not None and response.prompt_eval_count > num_ctx - num_predict:
        return failed(
            "context_overflow",
            f"the prompt took {response.prompt_eval_count} of num_ctx={num_ctx} tokens; Ollama may have truncated it",
            content, **metrics,
        )
    plan, problem = _parse(content, prompt)
    # A complete, valid object followed by a run of whitespace also ends with "length"; only an
    # answer that is unusable *and* cut off counts as truncated.
    if problem and response.done_reason == "length":
        return failed("truncated", "the answer hit the token limit (done_reason=length)", content, **metrics)
    if problem:
        return failed(*problem, content, **metrics)
    return Attempt(content, plan, seconds=time.perf_counter() - started, **metrics)


def _parse(content: str, prompt: prompts.Prompt) -> tuple[prompts.Plan | None, tuple[str, str] | None]:
    """The plan in a valid answer, or what is wrong with it (a failure code and a detail)."""
    text = content.strip()
    if not text:
        return None, ("empty_answer", "the answer was empty")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        if not text.startswith(("{", "[")):
            return None, ("prose", f"the answer is not JSON: it starts with {text[:40]!r}")
        return None, ("invalid_json", f"the answer is not valid JSON ({exc.msg} at character {exc.pos})")
    try:
        answer = prompt.answer.model_validate_json(text)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        ids = set(prompt.day.ids)
        unknown = [
            e for e in exc.errors(include_url=False)
            if e["loc"] and e["loc"][-1] == "fact_id" and e.get("input") not in ids
        ]
        lines = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        if unknown:
            cited = ", ".join(sorted({repr(str(e.get("input"))[:40]) for e in unknown}))
            return None, ("unknown_fact_id", f"the answer cites fact ids that do not exist ({cited}); {lines}")
        return None, ("schema_violation", lines)
    return prompts.Plan.from_answer(answer), None
