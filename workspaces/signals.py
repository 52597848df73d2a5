"""Hooks for the apps that build on workspaces (streaming, mcp_services, turns).

These are sent *inside* the writing transaction, so a receiver's rows (event log, memory outbox)
commit or roll back together with the message; receivers must do nothing slow and must defer
anything that leaves the process with `transaction.on_commit`.
"""

from django.dispatch import Signal

# sender=Message class; kwargs: created (list[workspaces.services.CreatedInput]), the messages of
# one batch in input order, each with its recipients and its event data
messages_created = Signal()

# kwargs: conversation_ids (list[UUID]) and owner_id, sent before the rows are deleted
conversations_deleting = Signal()

# kwargs: conversation_ids (set[UUID]); each receiver returns the set of those conversations that
# have an open (queued or running) turn, for `turn_policy: reject` (the turns app answers)
conversations_busy = Signal()
