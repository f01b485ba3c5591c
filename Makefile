# Two commands do all the setup: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export LOYALTY_HOME ?= $(CURDIR)/.loyalty
DEMO_DATE ?= $(shell date +%F)
DAGSTER_PORT ?= 3000

.PHONY: install demo test dev bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## The sample drops missing up to DEMO_DATE (default today), then the whole graph as of that date.
demo: $(STAMP)
	$(BIN)/loyalty-assets demo --as-of $(DEMO_DATE)

## The whole test suite; first starts PostgreSQL and installs Chromium when missing (Debian, apt-get).
test: $(STAMP)
	scripts/provision-test-machine
	$(BIN)/python -m pytest -n 2 --dist loadfile

## The Dagster UI on http://127.0.0.1:$(DAGSTER_PORT) (default 3000; `make dev DAGSTER_PORT=3001`)
dev: $(STAMP)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(LOYALTY_HOME)/dagster_home} ; mkdir -p $$DAGSTER_HOME ; \
	DAGSTER_HOME=$$DAGSTER_HOME $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(DAGSTER_PORT)

## Wall time and peak memory per stage.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(LOYALTY_HOME)
