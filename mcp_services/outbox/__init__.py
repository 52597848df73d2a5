"""The core's memory outbox: calls owed to the memory service, written with their cause and delivered
at least once (`delivery`)."""
