"""Hooks for the apps that build on the event log (webhooks).

`events_appended` is sent *inside* the transaction that appends events (`services.events_append`),
so a receiver's rows (webhook deliveries) commit or roll back together with the events: the
outbox pattern. Receivers must do nothing slow and nothing that leaves the process.
"""

from django.dispatch import Signal

# sender=Event class; kwargs: entries (list[services.AppendedEvent]), in log order per recipient
events_appended = Signal()
