"""The briefing against a real model: SmolLM2-135M on llama.cpp, behind the Ollama-compatible `evals.server`.

The emulator in `tests/ollama_emulator.py` plays what Ollama's grammar lets a
model write; these tests put the real thing in the loop: llama.cpp's own
json-schema-to-grammar converter and a real (small) model sampling under it.
llama-cpp-python compiles llama.cpp when installed (about ten minutes), so it is
not part of the default test environment: `make eval` installs it, and these
tests run wherever it is importable and are skipped, saying why, elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from evals import server as model_server
from insights import prompt
from tests.ollama_emulator import grammar_string

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(model_server.available() is not None, reason=model_server.available() or ""),
]
DATES = ["2026-11-18", "2026-11-19", "2026-11-20"]


@pytest.fixture(scope="module")
def real_model() -> Iterator[model_server.OllamaServer]:
    runners = model_server.load({model_server.DEFAULT_MODEL: model_server.smollm2_path()})  # type: ignore[dict-item]
    with model_server.OllamaServer(runners) as server:
        yield server


def test_llama_cpps_converter_bounds_the_comment_only_through_the_pattern() -> None:
    """GIVEN the briefing's answer schema and a schema that bounds a patterned string with maxLength only
    WHEN llama.cpp's json-schema-to-grammar converter (what Ollama runs) compiles them
    THEN the loose one leaves the string unbounded, as the test emulator assumes, and the briefing's comment
    rule is bounded at the comment limit inside the grammar itself."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    loose = {
        "type": "object",
        "properties": {"c": {"type": "string", "maxLength": 20, "pattern": "^[A-Za-z ]*$"}},
        "required": ["c"],
    }
    loose_grammar = json_schema_to_gbnf(json.dumps(loose))
    assert '"\\"" [A-Za-z ]* "\\""' in loose_grammar  # maxLength ignored next to a pattern
    assert len(grammar_string(loose["properties"]["c"], "x" * 50)) == 50  # and the emulator lets it through too

    from tests.test_briefing import DAY

    grammar = json_schema_to_gbnf(json.dumps(prompt.render(DAY).schema))
    comment_rules = [line for line in grammar.splitlines() if "[a-z ,.;:'!?]" in line]
    assert comment_rules and all("*" not in line and "+" not in line for line in comment_rules), comment_rules
    assert grammar.count(")?") >= prompt.COMMENT_MAX - 2  # 79 nested optional characters after the first, no more


def test_the_real_model_words_most_briefings_and_every_answer_it_gives_validates(
    real_model: model_server.OllamaServer, warehouse: Any
) -> None:
    """GIVEN the Ollama-compatible server running SmolLM2-135M under llama.cpp's grammar
    WHEN `insights.deliver --dry-run` runs for three report dates
    THEN at least two briefings are worded by the model and pass the audit, and no answer the grammar let
    through was rejected by validation (an allowed answer must be a valid one)."""
    for name in [k for k in warehouse.env if k.startswith(("TWILIO_", "RECIPIENT_", "OLLAMA_"))]:
        del warehouse.env[name]
    # How fast the model answers is measured by `make eval`, not here: wait as long as a busy machine needs.
    warehouse.env.update(OLLAMA_BASE_URL=real_model.url, OLLAMA_MODEL=model_server.DEFAULT_MODEL, OLLAMA_TIMEOUT="900")

    for date in DATES:
        warehouse.run(
            "python", "-m", "insights.deliver", "--target", "duckdb", "--dry-run", "--date", date, timeout=1800
        )

    import duckdb

    with duckdb.connect(str(warehouse.duckdb_path), read_only=True) as conn:
        rows = conn.execute(
            "select report_date, used_fallback, fallback_reason, attempts_json, message "
            "from analytics.ai_summaries order by report_date"
        ).fetchall()
    assert len(rows) == 3
    worded = [r for r in rows if not r[1]]
    assert len(worded) >= 2, [r[2] for r in rows]
    for _, _, _, attempts, _message in rows:
        for attempt in json.loads(attempts):
            assert not (attempt["failure"] or "").startswith(("schema_violation", "unknown_fact_id", "invalid_json")), (
                attempt
            )
    for *_, message in worded:
        assert "picked and annotated by the AI assistant" in message
