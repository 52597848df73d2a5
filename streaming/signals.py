"""Hooks for the apps that build on the event log (webhooks).

`events_appended` is sent *inside* the transaction that appends events (`services.events_append`),
so a receiver's rows (webhook deliveries) commit or roll back together with the events: the
outbox pattern. Receivers must do nothing slow and nothing that leaves the process.

It carries only the entries of recipients whose cursor counts a subscription
(`EventCursor.subscriptions`, read in the statement that reserves their seqs): an app that wants
a user's events raises it with `services.cursor_lock` + `subscriptions_set` in the transaction that
subscribes, so an append for someone with no subscription costs nothing more.
"""

from django.dispatch import Signal

# sender=Event class; kwargs: entries (list[services.AppendedEvent]), in log order per recipient
events_appended = Signal()
