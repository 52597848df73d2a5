"""Accounts: the user model, JWT login/refresh/logout, failed-login limits and user management."""
