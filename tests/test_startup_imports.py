"""What a Django process imports before it runs: every process the system (and the suite) starts
pays it. The MCP SDK (about 40% of a start: pydantic models for three protocol revisions) is
imported by the processes that call or serve MCP (mcp_services.basics), not by every `manage.py`
command, and daphne's twisted reactor only by `manage.py runserver`; a module-level import of either
would quietly put them back. The same for what `django.setup()` used to import through the apps'
admin modules and receivers (DRF and, through its optional imports, psycopg, requests and yaml; the
OAuth client; jsonschema; PyJWT): the workers and services start without them (common.admin,
accounts.receivers), and the model's client only with a model configured (turn_worker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.servers import ROOT, server_env

LOADED = "import json, sys; {code}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
LOADED_MODULES = "import json, sys; {code}; print(json.dumps(sorted(sys.modules)))"


def _top_level_modules(code: str, *, template: str = LOADED, **env: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", template.format(code=code)],
        cwd=ROOT,
        env=server_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_commands_start_without_the_mcp_sdk_and_nothing_starts_daphne():
    # What every `manage.py` command loads: the apps (their models, receivers and checks).
    commands = _top_level_modules("import django; django.setup()")
    assert "django" in commands
    assert not commands & {"mcp", "mcp_types", "daphne", "twisted"}
    # The core (its ASGI application and URLconf, as uvicorn loads them) never imports daphne.
    core = _top_level_modules("import cortex_site.asgi, cortex_site.urls")
    assert not core & {"daphne", "twisted"}


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_commands_start_without_the_admin_modules_and_what_they_imported():
    # The admin's modules are imported by the URLconf and the admin's checks (common.admin), the
    # receivers connected at start import models only: a worker's start imports none of these.
    # (psycopg only where the database is PostgreSQL: DRF's optional imports brought it to SQLite.)
    commands = _top_level_modules("import django; django.setup()")
    heavy = {"requests", "yaml", "jsonschema", "jwt", "openai", "pydantic", "authlib", "numpy"}
    if not os.environ.get("DATABASE_URL"):
        heavy.add("psycopg")
    assert not commands & heavy, commands & heavy
    loaded = _top_level_modules("import django; django.setup()", template=LOADED_MODULES)
    left_out = {"connections.admin", "accounts.admin", "connections.services", "accounts.authentication"}
    left_out |= {"rest_framework.serializers", "rest_framework_simplejwt.settings", "common.web.handlers"}
    assert not left_out & loaded, left_out & loaded
    # The admin itself is whole where it is used: its checks register every app's models first.
    registered = _top_level_modules(
        "import django; django.setup(); from django.core import checks; "
        "assert not checks.run_checks(tags=[checks.Tags.admin]); "
        "from django.contrib import admin; "
        "assert len(admin.site._registry) > 10, admin.site._registry"
    )
    assert "connections" in registered


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_the_core_imports_the_mcp_sdk_at_start_only_to_deliver_memory_after_each_commit():
    # Delivering memory after each commit (the default), the core calls the memory service from its
    # first input on: the SDK is imported before the port opens. Without it, at the first service call.
    assert "mcp" in _top_level_modules("import cortex_site.asgi", MEMORY_DRAIN_ON_COMMIT="1")
    core = _top_level_modules("import cortex_site.asgi", MEMORY_DRAIN_ON_COMMIT="0")
    assert not core & {"mcp", "mcp_types", "openai"}, core


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_a_turn_worker_imports_the_model_client_only_with_a_model_configured():
    # `handle` up to its loop: what a started worker has imported when it logs that it runs.
    code = (
        "import django; django.setup(); from unittest import mock; "
        "from turns.management.commands import turn_worker; "
        "command = turn_worker.Command(); "
        "mock.patch('asyncio.run').start(); mock.patch('uvloop.run').start(); "
        "command.handle(concurrency=None)"
    )
    assert "openai" not in _top_level_modules(code, CORTEX_LLM_BASE_URL="", CORTEX_LLM_MODEL="")
    assert "openai" in _top_level_modules(
        code, CORTEX_LLM_BASE_URL="http://127.0.0.1:9/v1", CORTEX_LLM_MODEL="fake-model"
    )


def test_the_supervisors_django_children_skip_the_checks_it_ran_at_its_own_start():
    # System checks import every URL's view (the MCP SDK among them): about a second of CPU per
    # process. `run_cortex` runs them once, at its own start; its children would repeat them.
    from operations.management.commands.run_cortex import Command

    options = {"host": "127.0.0.1", "port": 8000, "memory_port": 9000, "cognition_port": 9100}
    children = Command().children({**options, "notes_port": 9200, "housekeeping_every": 3600, "workers": 1})
    django_children = [child for child in children if "manage.py" in " ".join(child.argv)]
    assert len(django_children) == len(children) - 1  # all but the core (uvicorn, no checks)
    assert all(child.argv[3] == "--skip-checks" for child in django_children), [c.argv for c in django_children]


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_a_turn_worker_builds_what_the_first_expert_call_needs_before_it_runs():
    # jsonschema (the MCP SDK validates structured results with it) and the loop's transport (its TLS
    # context): about 60 ms that the first `tool.call` after an answer used to pay (bench.turns).
    code = (
        "import django; django.setup(); import asyncio, sys; from unittest import mock; "
        "from turns.management.commands import turn_worker; from turns.worker import TurnWorker; "
        "from mcp_services.experts import discovery, hosts\n"
        "seen = {}\n"
        "async def run(self, stop):\n"
        "    seen['jsonschema'] = 'jsonschema' in sys.modules\n"
        "    prepared = discovery._transports.get(asyncio.get_running_loop())\n"
        "    client = discovery._http({}, 1.0, hosts.ResponseBudget(1))\n"
        "    seen['shared'] = prepared is not None and client._transport._inner is prepared\n"
        "mock.patch.object(TurnWorker, 'run', run).start()\n"
        "turn_worker.Command().handle(concurrency=None)\n"
        "print(json.dumps(seen))"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        cwd=ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"jsonschema": True, "shared": True}
