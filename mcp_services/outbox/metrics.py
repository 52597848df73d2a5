"""The outbox backlog for Prometheus, computed when it scrapes (one indexed query per scrape, none
per request): pending entries and the age of the oldest."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.metrics import register_scrape_collector
from mcp_services.models import PENDING, OutboxEntry


class OutboxCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        backlog = GaugeMetricFamily("cortex_outbox_pending", "Memory outbox entries not yet delivered (nor failed).")
        oldest = GaugeMetricFamily(
            "cortex_outbox_oldest_pending_age_seconds", "Age of the oldest undelivered outbox entry (0 when none)."
        )
        failed = GaugeMetricFamily("cortex_outbox_failed", "Memory outbox entries marked failed for good.")
        numbers = OutboxEntry.objects.aggregate(
            pending=Count("id", filter=PENDING),
            oldest=Min("created_at", filter=PENDING),
            failed=Count("id", filter=Q(failed_at__isnull=False)),
        )
        backlog.add_metric([], numbers["pending"])
        age = (timezone.now() - numbers["oldest"]).total_seconds() if numbers["oldest"] else 0.0
        oldest.add_metric([], max(age, 0.0))
        failed.add_metric([], numbers["failed"])
        yield backlog
        yield oldest
        yield failed

    def describe(self) -> list:
        return []  # collected only at scrape time: never at registration


_collector = OutboxCollector()


def register() -> None:
    register_scrape_collector(_collector)
