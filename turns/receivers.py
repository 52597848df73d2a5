"""The turn of an input is written in the transaction that accepts the input (`messages_created`)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from turns import services
from workspaces.services import CreatedInput
from workspaces.signals import messages_created


@receiver(messages_created, dispatch_uid="turns.turns_create")
def create_turns(sender: Any, created: list[CreatedInput], **kwargs: Any) -> None:
    services.turns_create_for_inputs(created=[entry for entry in created if entry.turn_id is not None])
