"""Ask the local model (Ollama) to choose the day's facts; never raise, never trust the answer.

The model gets the prompt of `insights.prompt`, answers through Ollama's
structured outputs (`format` = the JSON schema of today's answer, which Ollama
compiles into a llama.cpp grammar), and the answer is validated with pydantic.

Sizing, before anything is sent: the prompt is counted with Llama 3.2's own
tokenizer (`insights.tokens`); `num_predict` is the answer's budget for its shape
(`insights.prompt.answer_budget`); the request's `num_ctx` is the smallest step
of 256 tokens that holds both, with room for a model whose tokenizer needs more
tokens than Llama 3.2's, never more than OLLAMA_NUM_CTX. When even the
facts that need attention do not fit, the model is not asked at all
(`prompt_too_long`). Ollama truncates an over-long prompt silently, so the
reported `prompt_eval_count` is checked too (`context_overflow`).

One retry, and it changes something: a different seed and a little warmth, plus
one line on what was wrong (never the rejected answer itself, which a small model
tends to repeat); after a cut-off answer it asks for less (shorter comments,
fewer items); after a context overflow it asks for a larger context. Each
attempt's tokens, seed and timing are kept (`Outcome.attempts`). When Ollama
cannot answer at all (not running, model not pulled, timeout, malformed
OLLAMA_BASE_URL) or the retry fails too, the outcome carries a `Failure` and the
caller builds the standard briefing from the same facts.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import ollama
from pydantic import ValidationError

from insights import prompt as prompts
from insights.facts import DayFacts
from insights.settings import OllamaSettings

CTX_STEP = 256
# Room for what Llama 3.2's count cannot know: another model family's chat template (a few tokens) and
# tokenizer (SmolLM2's needs 12% more tokens for the briefing's prompt). A model that still needs more is
# told apart by its prompt_eval_count, and the retry sizes its context from what that model counted.
CONTEXT_MARGIN = 32
OTHER_TOKENIZER = 1.12
SEED = 42
RETRY_SEED = 43
RETRY_TEMPERATURE = 0.3

# Why the model's answer was not used; stored in ai_summaries.fallback_reason as "<code>: <detail>".
RETRYABLE = {
    "empty_answer",
    "prose",
    "invalid_json",
    "unknown_fact_id",
    "schema_violation",
    "truncated",
    "context_overflow",
}


@dataclass(frozen=True)
class Failure:
    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True)
class Attempt:
    """One request to the model and what came back."""

    content: str | None
    seed: int
    temperature: float
    num_ctx: int
    num_predict: int
    counted_tokens: int  # the prompt on Llama 3.2's tokenizer, counted before sending
    plan: prompts.Plan | None = None
    done_reason: str | None = None
    prompt_tokens: int | None = None  # prompt_eval_count, as the server reports it
    completion_tokens: int | None = None  # eval_count
    seconds: float = 0.0
    failure: Failure | None = None

    def as_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("content", "plan")}
        data["failure"] = str(self.failure) if self.failure else None
        data["seconds"] = round(self.seconds, 3)
        return data


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
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def prompt_tokens(self) -> int | None:
        """The prompt tokens of the last attempt (each attempt's are in `attempts`)."""
        return self.last.prompt_tokens if self.last else None

    @property
    def completion_tokens(self) -> int | None:
        return self.last.completion_tokens if self.last else None


def context_for(prompt: prompts.Prompt, max_num_ctx: int, ratio: float = OTHER_TOKENIZER) -> int:
    """The smallest num_ctx (a multiple of CTX_STEP) that holds the prompt, as the serving model counts it
    (`ratio` times Llama 3.2's count), and the answer's budget."""
    needed = math.ceil(prompt.tokens * ratio) + prompt.num_predict + CONTEXT_MARGIN
    return min(max_num_ctx, math.ceil(needed / CTX_STEP) * CTX_STEP)


def _observed_ratio(attempt: Attempt) -> float:
    """How many tokens the serving model needs per Llama 3.2 token, from an answered attempt it did not
    truncate; the default margin when that is not known."""
    if (
        attempt.prompt_tokens
        and attempt.counted_tokens
        and attempt.prompt_tokens + attempt.num_predict <= attempt.num_ctx
    ):
        return max(1.0, attempt.prompt_tokens / attempt.counted_tokens)
    return OTHER_TOKENIZER


def options(seed: int, temperature: float, num_ctx: int, num_predict: int) -> dict[str, Any]:
    return {"temperature": temperature, "seed": seed, "num_ctx": num_ctx, "num_predict": num_predict}


def choose(day: DayFacts, settings: OllamaSettings, *, timeout: httpx.Timeout | float | None = None) -> Outcome:
    """Ask the model for a plan; every problem ends in `Outcome.failure`, never in an exception."""
    started = time.perf_counter()
    prompt = prompts.fit(day, settings.max_num_ctx, scale=OTHER_TOKENIZER, margin=CONTEXT_MARGIN)
    if prompt is None:
        needed = prompts.render(day)
        failure = Failure(
            "prompt_too_long",
            f"the facts take {needed.tokens} prompt tokens plus {needed.num_predict} for the "
            f"answer, more than OLLAMA_NUM_CTX={settings.max_num_ctx}",
        )
        return Outcome(None, failure=failure, seconds=time.perf_counter() - started)
    outcome = Outcome(prompt)
    client, problem = _client(settings, timeout)
    if client is None:
        outcome.failure = Failure("ollama_error", problem[:300])
        outcome.seconds = time.perf_counter() - started
        return outcome
    try:
        num_ctx = context_for(prompt, settings.max_num_ctx)
        attempt = _ask(client, settings, prompt, SEED, 0.0, num_ctx)
        outcome.attempts.append(attempt)
        if attempt.failure is not None and attempt.failure.code in RETRYABLE:
            retry = _retry_prompt(day, prompt, attempt, settings)
            if retry is not None:
                prompt, num_ctx = retry
                outcome.prompt = prompt
                attempt = _ask(client, settings, prompt, RETRY_SEED, RETRY_TEMPERATURE, num_ctx)
                outcome.attempts.append(attempt)
        if attempt.plan is not None:
            outcome.plan = attempt.plan
        else:
            assert attempt.failure is not None
            retried = len(outcome.attempts) > 1
            detail = f"{attempt.failure.detail} (after one retry)" if retried else attempt.failure.detail
            outcome.failure = Failure(attempt.failure.code, detail)
    finally:
        client.close()
        outcome.seconds = time.perf_counter() - started
    return outcome


def _retry_prompt(
    day: DayFacts, prompt: prompts.Prompt, first: Attempt, settings: OllamaSettings
) -> tuple[prompts.Prompt, int] | None:
    """The second request: what it changes depends on what went wrong (None: nothing worth retrying)."""
    assert first.failure is not None
    ratio = _observed_ratio(first)
    if first.failure.code == "truncated":
        smaller = prompts.fit(day, settings.max_num_ctx, ask=prompts.SMALLER_ASK, scale=ratio, margin=CONTEXT_MARGIN)
        if smaller is None:
            return None
        smaller = smaller.with_note("it was cut off before the JSON object was complete; write less.")
        return smaller, context_for(smaller, settings.max_num_ctx, ratio)
    if first.failure.code == "context_overflow":
        larger = min(settings.max_num_ctx, 2 * first.num_ctx)
        return (prompt, larger) if larger > first.num_ctx else None
    retry = prompt.with_note(first.failure.detail)
    return retry, context_for(retry, settings.max_num_ctx, ratio)


def _client(settings: OllamaSettings, timeout: httpx.Timeout | float | None) -> tuple[ollama.Client | None, str]:
    """The Ollama client, or why OLLAMA_BASE_URL cannot give one. A daily job treats a malformed URL like
    an Ollama that is down: the standard briefing still goes out, with the reason."""
    if settings.url_problem:
        return None, settings.url_problem
    if timeout is None:
        timeout = httpx.Timeout(connect=5.0, read=settings.timeout, write=10.0, pool=5.0)
    try:
        return ollama.Client(host=settings.base_url, timeout=timeout), ""
    except ValueError as exc:
        return None, f"OLLAMA_BASE_URL {settings.base_url!r} is not a valid URL ({exc})"


def _ask(
    client: ollama.Client, settings: OllamaSettings, prompt: prompts.Prompt, seed: int, temperature: float, num_ctx: int
) -> Attempt:
    started = time.perf_counter()
    model = settings.model
    sent = dict(
        seed=seed,
        temperature=temperature,
        num_ctx=num_ctx,
        num_predict=prompt.num_predict,
        counted_tokens=prompt.tokens,
    )

    def failed(code: str, detail: str, content: str | None = None, **metrics: Any) -> Attempt:
        return Attempt(content, **sent, seconds=time.perf_counter() - started, failure=Failure(code, detail), **metrics)

    try:
        response = client.chat(
            model=model,
            messages=prompt.messages,
            stream=False,
            format=prompt.schema,
            options=options(seed, temperature, num_ctx, prompt.num_predict),
        )
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            return failed("model_not_found", f"Ollama has no model {model!r}; run `ollama pull {model}`")
        return failed("ollama_error", f"HTTP {exc.status_code}: {exc.error}"[:300])
    except ConnectionError:
        return failed("ollama_unreachable", f"no Ollama server answered at {settings.base_url}")
    except httpx.TimeoutException as exc:
        return failed("timeout", f"Ollama did not answer within {settings.timeout:g}s ({type(exc).__name__})")
    except (httpx.HTTPError, ValidationError, ValueError) as exc:  # a broken response or transport
        return failed("ollama_error", f"{type(exc).__name__}: {exc}"[:300])

    content = response.message.content or ""
    metrics = dict(
        done_reason=response.done_reason,
        prompt_tokens=response.prompt_eval_count,
        completion_tokens=response.eval_count,
    )
    if response.prompt_eval_count is not None and response.prompt_eval_count > num_ctx - prompt.num_predict:
        return failed(
            "context_overflow",
            f"the prompt took {response.prompt_eval_count} of num_ctx={num_ctx} tokens; Ollama may have truncated it",
            content,
            **metrics,
        )
    plan, problem = _parse(content, prompt)
    # A complete, valid object followed by a run of whitespace also ends with "length"; only an
    # answer that is unusable *and* cut off counts as truncated.
    if problem and response.done_reason == "length":
        return failed("truncated", "the answer hit the token limit (done_reason=length)", content, **metrics)
    if problem:
        return failed(*problem, content, **metrics)
    return Attempt(content, **sent, plan=plan, seconds=time.perf_counter() - started, **metrics)


def _parse(content: str, prompt: prompts.Prompt) -> tuple[prompts.Plan | None, tuple[str, str] | None]:
    """The plan in a valid answer, or what is wrong with it (a failure code and a short detail)."""
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
        errors = exc.errors(include_url=False)
        ids = set(prompt.day.ids)
        unknown = sorted(
            {
                repr(str(e.get("input"))[:40])
                for e in errors
                if e["loc"] and e["loc"][-1] == "fact_id" and e.get("input") not in ids
            }
        )
        lines = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:3])
        if unknown:
            return None, ("unknown_fact_id", f"it cites fact ids that do not exist ({', '.join(unknown)}); {lines}")
        return None, ("schema_violation", lines)
    return prompts.Plan.from_answer(answer), None
