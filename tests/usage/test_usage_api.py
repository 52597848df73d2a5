"""Usage and budgets in-process: the services and selectors against the real database, the API
through URLs (alice owns the workspace, bob takes part, charlie is an outsider)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from conftest import client_for
from turns.responders import _usage_reported
from usage import selectors
from usage.models import UsageTotal, UserBudget
from usage.services import TurnUsageRecord, UsageDelta, usage_record

pytestmark = pytest.mark.django_db


def record(user, workspace, tokens: int, *, turn_id=None, finished=True):
    delta = UsageDelta(model="m", input_tokens=tokens, output_tokens=0, model_requests=1)
    return usage_record(
        records=[
            TurnUsageRecord(
                turn_id=turn_id or uuid.uuid4(),
                user_id=user.id,
                workspace_id=workspace.id,
                conversation_id=uuid.uuid4(),
                delta=delta,
                started_at=timezone.now(),
                finished=finished,
            )
        ],
        now=timezone.now(),
    )


def test_totals_add_up_per_user_and_workspace_and_a_paused_turn_counts_once(alice, workspace):
    turn_id = uuid.uuid4()
    record(alice, workspace, 10, turn_id=turn_id, finished=False)  # paused
    rows, _ = record(alice, workspace, 5, turn_id=turn_id)  # resumed and ended on another worker
    assert rows[turn_id].input_tokens == 15
    totals = {total.scope: (total.tokens, total.turns) for total in UsageTotal.objects.all()}
    assert totals == {"user": (15, 1), "workspace": (15, 1)}


def test_a_budget_warns_once_at_80_percent_and_refuses_past_it(alice, bob, workspace, settings):
    UserBudget.objects.create(user=bob, monthly_tokens=100)
    now = timezone.now()
    _, warnings = record(bob, workspace, 79)
    assert warnings == [] and selectors.budget_refusal(user_id=bob.id, workspace_id=workspace.id, now=now) is None
    _, warnings = record(bob, workspace, 1)
    assert [(w.scope, w.recipient_id, w.used, w.tokens) for w in warnings] == [("user", bob.id, 80, 100)]
    _, warnings = record(bob, workspace, 19)
    assert warnings == []  # once per period
    assert selectors.budget_refusal(user_id=bob.id, workspace_id=workspace.id, now=now) is None
    record(bob, workspace, 1)
    assert "budget" in selectors.budget_refusal(user_id=bob.id, workspace_id=workspace.id, now=now)
    # The default applies to everyone without an override; 0 means none.
    settings.CORTEX = {**settings.CORTEX, "USER_MONTHLY_TOKENS": 50}
    assert selectors.user_limit(user_id=alice.id) == 50 and selectors.user_limit(user_id=bob.id) == 100


def test_the_workspace_budget_is_the_owners_setting_and_warns_the_owner(alice, bob, charlie, workspace):
    outsider = client_for(charlie).patch(f"/config/workspace/{workspace.id}", {"monthly_tokens": 1}, format="json")
    assert outsider.status_code == 404
    patched = client_for(alice).patch(f"/config/workspace/{workspace.id}", {"monthly_tokens": 10}, format="json")
    assert patched.status_code == 200 and patched.json()["workspace"]["monthly_tokens"] == 10
    _, warnings = record(bob, workspace, 9)
    assert [(w.scope, w.recipient_id, w.owner_id) for w in warnings] == [("workspace", alice.id, workspace.id)]
    assert selectors.budget_refusal(user_id=bob.id, workspace_id=workspace.id, now=timezone.now()) is None
    record(bob, workspace, 1)
    refusal = selectors.budget_refusal(user_id=bob.id, workspace_id=workspace.id, now=timezone.now())
    assert refusal is not None and "workspace" in refusal


def test_get_usage_is_the_callers_own_and_refuses_bad_dates(alice, bob, workspace):
    record(bob, workspace, 7)
    body = client_for(bob).get("/usage", {"group_by": "model"}).json()
    assert body["items"] == [{"key": "m", "turns": 1, "input_tokens": 7, "output_tokens": 0, "tool_calls": 0}]
    assert body["budget"] == {"period": "month", "tokens": 0, "used": 7}
    assert client_for(alice).get("/usage").json()["items"] == []
    bad = client_for(bob).get("/usage", {"from": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["fields"] == {"from": ["Use YYYY-MM-DD or ISO 8601."]}
    assert client_for(None).get("/usage").status_code == 401


def test_reported_tokens_are_counted_by_model_for_prometheus():
    def value(kind: str) -> float:
        return REGISTRY.get_sample_value("cortex_model_tokens_total", {"model": "probe-model", "kind": kind}) or 0

    before = value("input"), value("output")
    out = SimpleNamespace(usage=UsageDelta())
    _usage_reported(out, "probe-model", SimpleNamespace(prompt_tokens=12, completion_tokens=3), 0.0)
    assert (value("input") - before[0], value("output") - before[1]) == (12, 3)
    assert (out.usage.input_tokens, out.usage.output_tokens, out.usage.model_requests) == (12, 3, 1)
