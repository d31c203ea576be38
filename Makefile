# CRM Intelligence — the commands a user runs.
#   make demo    the whole day against the local sandbox org, on an embedded DuckDB file
#   make test    the full test suite (starts its own PostgreSQL server)
#   make daily   extract -> dbt build -> briefing, against your own Zoho org (TARGET=duckdb|postgres)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TARGET ?= duckdb

.DEFAULT_GOAL := help
.PHONY: help install demo test daily api bench clean

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

test: install  ## run the whole test suite, PostgreSQL included
	@scripts/ensure-postgres.sh
	$(BIN)/pytest -q

daily: install profiles.yml  ## extract, dbt build and deliver for your own org (TARGET=duckdb|postgres)
	@scripts/daily.sh $(TARGET)

api: install  ## serve the metrics API on http://127.0.0.1:8000 (TARGET=duckdb|postgres)
	$(BIN)/python -m insights.api --target $(TARGET)

bench: install  ## print the load, soak and end-to-end benchmark figures
	@scripts/ensure-postgres.sh
	$(BIN)/python -m benchmarks.load
	$(BIN)/python -m benchmarks.soak
	$(BIN)/python -m benchmarks.daily

clean:  ## remove the virtualenv, dbt's working files and the demo warehouse
	rm -rf $(VENV) target logs demo.duckdb demo.duckdb.wal .dlt/pipelines
