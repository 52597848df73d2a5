"""Debug mode only: the original guide's demo login, user@example.com / password123."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEMO_EMAIL = "user@example.com"
DEMO_PASSWORD = "password123"


class Command(BaseCommand):
    help = "Create the demo user (DEBUG=1 only)."

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG:
            raise CommandError("The demo user exists only in debug mode (DEBUG=1).")
        User = get_user_model()
        user, created = User.objects.get_or_create(email=DEMO_EMAIL, defaults={"name": "Demo User"})
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        self.stdout.write(f"Demo user {DEMO_EMAIL} / {DEMO_PASSWORD} {'created' if created else 'present'}.")
