"""The turn of an input is written in the transaction that accepts the input (`messages_created`),
which first asks which of its conversations have a turn open (`conversations_busy`, for `turn_policy`).
A user being deleted (`user_deleting`) leaves the other participants' turns and inbox requests."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from accounts.signals import user_deleting
from connections.signals import account_connected
from turns import services
from turns.inbox.services import connect_questions_answer
from workspaces.services import CreatedInput
from workspaces.signals import conversations_busy, messages_created


@receiver(messages_created, dispatch_uid="turns.turns_create")
def create_turns(sender: Any, created: list[CreatedInput], **kwargs: Any) -> None:
    services.turns_create_for_inputs(created=[entry for entry in created if entry.turn_id is not None])


@receiver(conversations_busy, dispatch_uid="turns.conversations_busy")
def busy_conversations(sender: Any, conversation_ids: set, **kwargs: Any) -> set:
    return services.conversations_open_turns(conversation_ids=conversation_ids)


@receiver(user_deleting, dispatch_uid="turns.forget_user")
def forget_user(sender: Any, user: Any, **kwargs: Any) -> None:
    services.turns_user_forget(user_id=user.id)


@receiver(account_connected, dispatch_uid="turns.account_connected")
def answer_connect_questions(sender: Any, user_id: Any, expert_id: Any, **kwargs: Any) -> None:
    connect_questions_answer(user_id=user_id, expert_id=expert_id)
