"""Each user's `EventCursor.subscriptions` counts their active webhooks (what the event append reads)."""

from django.db import migrations
from django.db.models import Count


def count_active(apps, schema_editor):
    Webhook = apps.get_model("webhooks", "Webhook")
    EventCursor = apps.get_model("streaming", "EventCursor")
    counts = Webhook.objects.filter(active=True).values("owner_id").annotate(n=Count("id")).order_by()
    for row in counts:
        EventCursor.objects.update_or_create(user_id=row["owner_id"], defaults={"subscriptions": row["n"]})


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
        ("streaming", "0004_event_cursor_subscriptions"),
    ]

    operations = [migrations.RunPython(count_active, migrations.RunPython.noop)]
