"""Model usage per turn, running monthly totals per user and per workspace, and the budgets they
are checked against (CONTRACT.md, "Usage and budgets")."""
