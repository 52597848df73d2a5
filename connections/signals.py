"""`account_connected(user_id, expert_id)`: sent after the commit of a new connection (turns waiting
for it answer their `connect` question: `turns.receivers`)."""

from django.dispatch import Signal

account_connected = Signal()
