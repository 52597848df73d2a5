"""Hooks for the apps that build on accounts (workspaces, mcp_services).

Sent inside the deleting transaction, before the user's rows are gone, so receivers can still read
what belongs to the user and enqueue its clean-up (memory purges through the outbox).
"""

from django.dispatch import Signal

# kwargs: user (User), sent by accounts.services.user_delete before the user is deleted
user_deleting = Signal()
