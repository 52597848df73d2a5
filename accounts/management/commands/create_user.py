"""`manage.py create_user --email E --name N`: the password never appears on the command line."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Create a user. The password comes from --password-file, $CORTEX_USER_PASSWORD, or a prompt."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--name", default="")
        parser.add_argument("--password-file", type=Path, help="Read the password from this file's first line.")
        parser.add_argument("--staff", action="store_true", help="Allow the user into the admin site.")
        parser.add_argument(
            "--if-missing", action="store_true", help="Succeed without changes when the email already exists."
        )

    def _password(self, options: dict) -> str:
        if options["password_file"]:
            try:
                return options["password_file"].read_text().splitlines()[0]
            except (OSError, IndexError) as exc:
                raise CommandError(f"Cannot read a password from {options['password_file']}: {exc}") from exc
        if os.environ.get("CORTEX_USER_PASSWORD"):
            return os.environ["CORTEX_USER_PASSWORD"]
        if not options.get("interactive", True) or not os.isatty(0):
            raise CommandError("No password: use --password-file or CORTEX_USER_PASSWORD, or run in a terminal.")
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password (again): "):
            raise CommandError("The passwords do not match.")
        return first

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        email = User.objects.normalize_email(options["email"]).lower()
        if User.objects.filter(email=email).exists():
            if options["if_missing"]:
                self.stdout.write(f"User {email} already exists.")
                return
            raise CommandError(f"A user with email {email} already exists.")
        password = self._password(options)
        candidate = User(email=email, name=options["name"])
        try:
            validate_password(password, candidate)
            user = User.objects.create_user(
                email=email, password=password, name=options["name"], is_staff=options["staff"]
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(self.style.SUCCESS(f"Created user {user.email} ({user.id})."))
