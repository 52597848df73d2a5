"""Every existing user gets an event cursor (new users get one when they are created)."""

from django.conf import settings
from django.db import migrations


def cursors_backfill(apps, schema_editor):
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    EventCursor = apps.get_model("streaming", "EventCursor")
    missing = User.objects.filter(event_cursor__isnull=True).values_list("id", flat=True)
    EventCursor.objects.bulk_create([EventCursor(user_id=uid) for uid in missing.iterator()], batch_size=1000)


class Migration(migrations.Migration):
    dependencies = [
        ("streaming", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(cursors_backfill, migrations.RunPython.noop)]
