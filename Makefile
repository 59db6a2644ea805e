# The two commands: `make run` and `make test` (see README.md); `make demo` loads a fictional CPTS.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080
export COORDINATION_TEST_PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: install run demo test check lint typecheck compose-check pytest test-security-long bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/coordination db upgrade
	$(BIN)/coordination serve --host 127.0.0.1 --port $(PORT)

# A small fictional CPTS (professionals, a hospital client, three patients, the protocol library) in the
# database `make run` uses, then what to try next; idempotent, refuses a database with other data
# (DEMO_ARGS=--force to add it anyway). Writes ./demo-discharge.json and ./demo-credentials.json.
demo: install
	$(BIN)/coordination db upgrade
	$(BIN)/coordination demo --base-url http://127.0.0.1:$(PORT) $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# docker/compose.yaml through `docker compose config` when the client and its compose plugin are
# here; no Docker engine is needed (and none runs on the development machines).
compose-check:
	@if docker compose version >/dev/null 2>&1; then \
	  dir=$$(mktemp -d) && touch $$dir/db_password $$dir/database_url $$dir/secret_key && \
	  COORDINATION_SECRETS_DIR=$$dir docker compose -f docker/compose.yaml config --quiet; \
	  status=$$?; rm -rf $$dir; [ $$status -eq 0 ] && echo "docker/compose.yaml: valid"; exit $$status; \
	else \
	  echo "compose-check skipped: no 'docker compose' client here (tests/ops checks the file's structure)"; \
	fi

check: lint typecheck compose-check

# The whole suite, on SQLite and on PostgreSQL (tests are parametrized over both backends).
pytest: install
	$(BIN)/pytest -p no:cacheprovider --cov --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

test: check pytest

# The access-invariant properties (tests/security, issue 16) with hundreds of random worlds per
# property instead of the fixed-seed CI profile; takes tens of minutes.
test-security-long: install
	HYPOTHESIS_PROFILE=long $(BIN)/pytest -p no:cacheprovider -p no:logging tests/security $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/bench_core.py

clean:
	rm -rf $(VENV) instance .mypy_cache .ruff_cache .pytest_cache .coverage

# Chaos, long form (issue 17): 10,000 discharges ($process-message, one in four over MLLP) at up to 20
# a second while kill -9 hits the delivery worker, the MLLP listener and a gunicorn worker in turn every
# 7 s (each child every 21 s, 3 kills in 60 s: below serve's crash-loop limit of 5 exits in 60 s).
# Prints the figures (sent, acknowledged, delivered, duplicates, lost, time to recover after each kill).
# 15 to 30 minutes per backend on a 2-core machine (the server, not the senders, bounds the rate:
# about 8 to 12 discharges a second);
# CHAOS_BACKENDS=sqlite (or postgresql) runs one.
CHAOS_MESSAGES ?= 10000
CHAOS_RATE ?= 20
CHAOS_KILL_EVERY ?= 7
CHAOS_BACKENDS ?= sqlite,postgresql
.PHONY: chaos-long
chaos-long: install
	CHAOS_MESSAGES=$(CHAOS_MESSAGES) CHAOS_RATE=$(CHAOS_RATE) CHAOS_KILL_EVERY=$(CHAOS_KILL_EVERY) \
	  COORDINATION_TEST_BACKENDS=$(CHAOS_BACKENDS) \
	  $(BIN)/pytest -p no:cacheprovider -p no:logging -s -q tests/ops/test_chaos_kill.py $(PYTEST_ARGS)
