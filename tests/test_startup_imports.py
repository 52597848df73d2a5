"""What a Django process imports before it runs: every process the system (and the suite) starts
pays it. The MCP SDK (about 40% of a start: pydantic models for three protocol revisions) is
imported by the processes that call or serve MCP (mcp_services.basics), not by every `manage.py`
command, and daphne's twisted reactor only by `manage.py runserver`; a module-level import of either
would quietly put them back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.servers import ROOT, server_env

LOADED = "import json, sys; {code}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"


def _top_level_modules(code: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOADED.format(code=code)],
        cwd=ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_commands_start_without_the_mcp_sdk_and_nothing_starts_daphne():
    # What every `manage.py` command loads: the apps (their models, receivers and checks) and admin.
    commands = _top_level_modules(
        "import django; django.setup(); from django.contrib import admin; admin.autodiscover()"
    )
    assert "django" in commands and "rest_framework" in commands
    assert not commands & {"mcp", "mcp_types", "daphne", "twisted"}
    # The core (its ASGI application and URLconf, as uvicorn loads them) imports the SDK at start-up
    # (its readiness and service calls run under time limits), never daphne.
    core = _top_level_modules("import cortex_site.asgi, cortex_site.urls")
    assert "mcp" in core
    assert not core & {"daphne", "twisted"}


def test_the_supervisors_django_children_skip_the_checks_it_ran_at_its_own_start():
    # System checks import every URL's view (the MCP SDK among them): about a second of CPU per
    # process. `run_cortex` runs them once, at its own start; its children would repeat them.
    from operations.management.commands.run_cortex import Command

    options = {"host": "127.0.0.1", "port": 8000, "memory_port": 9000, "cognition_port": 9100}
    children = Command().children({**options, "notes_port": 9200, "housekeeping_every": 3600, "workers": 1})
    django_children = [child for child in children if "manage.py" in " ".join(child.argv)]
    assert len(django_children) == len(children) - 1  # all but the core (uvicorn, no checks)
    assert all(child.argv[3] == "--skip-checks" for child in django_children), [c.argv for c in django_children]
