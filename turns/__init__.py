"""Assistant turns: the Turn model and leases, the turn worker, the responders and the turn API."""
