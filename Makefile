# Cortex Core: `make run` serves the whole system, `make check` is the fast loop (lint and every
# test that starts no process), `make test` runs the whole suite on SQLite and on PostgreSQL.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
UV_VERSION := 0.13.10
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# pytest-xdist workers: most of the suite's time is end-to-end tests waiting on the processes they
# start, so more workers than this machine's two cores pay off. WORKERS=0 runs in one process.
# (A stack's processes start together, tests.servers.running_together: each costs ~3 s of CPU to
# start, and one after the other they would use one core of two.)
WORKERS ?= 3
XDIST := $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadfile --no-loadscope-reorder)
# The suite writes Python's bytecode cache (`__pycache__`, ignored by git) even where the environment
# says not to (PYTHONDONTWRITEBYTECODE, set in some sandboxes): without it each of the hundreds of
# processes a pass starts compiles the project's modules from source again (~0.1 s of CPU each).
TEST_ENV := PYTHONDONTWRITEBYTECODE=

.PHONY: run check test lint test-sqlite test-postgres bench venv migrate clean

venv: $(STAMP)

# Reinstall only when the pinned requirements change. uv (pinned here, installed into the venv by pip)
# installs them: on a fresh clone 64 s against pip's 142 s (parallel downloads and bytecode
# compilation); where uv cannot reach an index or fails, pip installs them as before (pip's own
# configuration applies there; uv takes PIP_INDEX_URL or its own UV_* settings).
$(STAMP): requirements.txt requirements-dev.txt requirements-pgserver.txt
	@if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
		rm -rf $(VENV); py=$$(scripts/find_python.sh) && echo "Creating $(VENV) with $$py" && "$$py" -m venv $(VENV); \
	fi
	@if $(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) && \
	    env UV_HTTP_TIMEOUT=$${UV_HTTP_TIMEOUT-30} $${PIP_INDEX_URL:+UV_DEFAULT_INDEX=$$PIP_INDEX_URL} \
	    $(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode -r requirements-dev.txt; then :; \
	else \
		echo "uv could not install the requirements (above): installing them with pip"; \
		$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip && \
		$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt; \
	fi
	@touch $(STAMP)

migrate: venv
	DEBUG=$${DEBUG-1} $(PY) manage.py migrate --noinput

run: venv
	@export DEBUG=$${DEBUG-1}; \
	$(PY) manage.py migrate --noinput && \
	if [ "$$DEBUG" = 1 ]; then $(PY) manage.py ensure_demo_user; fi && \
	exec $(PY) manage.py run_cortex --host $(HOST) --port $(PORT)

# `make lint` runs beside the SQLite pass, not before it: its minute or so of one core fits in what
# the pass leaves idle while its end-to-end tests wait on their processes. Its output is printed
# when the pass ends, and either failing stops `make test` before the PostgreSQL pass.
test: venv
	@mkdir -p var; \
	$(MAKE) --no-print-directory lint >var/lint.log 2>&1 & lint_pid=$$!; \
	$(MAKE) --no-print-directory test-sqlite; sqlite_status=$$?; \
	wait $$lint_pid; lint_status=$$?; \
	cat var/lint.log; \
	if [ $$lint_status -ne 0 ]; then echo "make test: make lint failed (above)"; exit $$lint_status; fi; \
	if [ $$sqlite_status -ne 0 ]; then exit $$sqlite_status; fi; \
	$(MAKE) --no-print-directory test-postgres

# Before each commit: lint, then every test that starts no process (`-m "not e2e"`, on SQLite).
check: lint
	$(TEST_ENV) $(PY) -m pytest -m "not e2e" $(XDIST) $(PYTEST_ARGS)

# Static checks (config in pyproject.toml): ruff lint and format, mypy with django-stubs, and the
# import contracts (import-linter: memory and cognition never import the core's apps or the outbox).
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	DEBUG=1 $(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache

test-sqlite: venv
	$(TEST_ENV) $(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# The PostgreSQL pass: every test except those marked database_agnostic (README, "Two commands").
# The rule: in-process tests that use the database stay (cheap, and their queries run here). A test that
# starts processes (e2e) stays only if PostgreSQL decides its outcome between processes: claims and
# leases (turns, the outbox, webhooks, schedules), row locks and racing transactions, sequences under
# concurrent writers, LISTEN/NOTIFY wake-ups, export and erasure over real rows, or raw SQL that no
# in-process test runs on PostgreSQL (grep before marking). Otherwise it is marked: it checks the wire
# (HTTP, SSE/WebSocket, MCP, OAuth, limits, throttles, tracing), the processes (start-up, shutdown,
# the supervisor), Redis or SQLite itself, over plain ORM that in-process tests already run here. In a
# file that mixes both, mark the tests, not the file. Each xdist worker gets its own test database
# (pytest-django: test_postgres_gw0, ...).
test-postgres: venv
	PY=$(PY) $(TEST_ENV) scripts/with_postgres.sh $(PY) -m pytest -m "not database_agnostic" $(XDIST) $(PYTEST_ARGS)

bench: venv
	$(PY) -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
